"""Motion gating: a cheap per-stream motion check on a small grey copy of each sampled frame that
decides whether the frame goes to inference (Frigate's central trick, on the producer's side).

A frame is sent when
- it is the stream's first, or `keepalive_s` passed since the last frame sent (tracks and zone
  counts stay alive);
- it differs from the last frame *sent*: at least `min_area` of its pixels moved by more than
  `pixel_delta` grey levels (so slow creep adds up until it counts, and lighting that changed once
  costs one frame);
- or the newest result of the stream still has objects (a parked car keeps its track).
Otherwise it is held back: counted `skipped_static` in the ledger, and the next frame sent says how
many were held before it (`gated`), so the tracker ages lost tracks as if it had seen them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from common.analytics_settings import MotionSettings
from common.images import Picture, YuvImage

#: Width of the grey copy compared (height follows the frame's aspect).
WIDTH = 160


@dataclass
class MotionStats:
    held: int = 0
    sent_first: int = 0
    sent_motion: int = 0
    sent_objects: int = 0
    sent_keepalive: int = 0


class MotionGate:
    def __init__(self, settings: MotionSettings) -> None:
        self.settings = settings
        self.stats = MotionStats()
        self._reference: np.ndarray | None = None  # the small grey copy of the last frame sent
        self._mask: np.ndarray | None = None  # True where pixels count
        self._last_sent = 0.0
        self._held = 0  # held since the last frame sent

    def small(self, image: Picture) -> np.ndarray:
        """The grey, blurred copy WIDTH pixels wide that frames are compared on (from YUV: its Y plane)."""
        if isinstance(image, YuvImage):
            image = image.y
        h, w = image.shape[:2]
        size = (WIDTH, max(1, round(h * WIDTH / w)))
        step = max(1, w // (2 * WIDTH))  # every step-th pixel first: a 1080p frame costs 0.3 ms, not 1.7
        if step > 1:
            image = np.ascontiguousarray(image[::step, ::step])
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def _counting(self, shape: tuple[int, ...]) -> np.ndarray:
        if self._mask is None or self._mask.shape != shape:
            mask = np.ones(shape, dtype=bool)
            h, w = shape
            for x1, y1, x2, y2 in self.settings.mask:
                mask[int(y1 * h) : int(np.ceil(y2 * h)), int(x1 * w) : int(np.ceil(x2 * w))] = False
            self._mask = mask
        return self._mask

    def changed(self, small: np.ndarray) -> float:
        """The fraction of counted pixels that moved more than pixel_delta since the last frame sent."""
        ref = self._reference
        if ref is None or ref.shape != small.shape:
            return 1.0
        counting = self._counting(small.shape)
        moved = (cv2.absdiff(small, ref) > self.settings.pixel_delta) & counting
        return float(moved.sum()) / max(1, int(counting.sum()))

    def decide(self, image: Picture, now: float, objects_present: Callable[[], bool]) -> bool:
        """True: send this frame to inference (and it becomes the reference); False: hold it back."""
        small = self.small(image)
        st = self.stats
        if self._reference is None:
            st.sent_first += 1
        elif now - self._last_sent >= self.settings.keepalive_s:
            st.sent_keepalive += 1
        elif self.changed(small) >= self.settings.min_area:
            st.sent_motion += 1
        elif objects_present():
            st.sent_objects += 1
        else:
            st.held += 1
            self._held += 1
            return False
        self._reference, self._last_sent = small, now
        return True

    def take_held(self) -> int:
        """Frames held back since the last one sent (for the frame being sent now), and start again."""
        held, self._held = self._held, 0
        return held
