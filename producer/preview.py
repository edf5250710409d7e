"""Small preview JPEGs for the live view: a few a second per stream, with the frame's `seq`.

The preview is made from a frame already encoded for a batch: its JPEG is reused as it is when it
is small enough (the usual case at imgsz 320: ~0 cost), else it is decoded at half or quarter scale
(libjpeg's DCT scaling, cheap) and encoded again at PREVIEW_WIDTH. While a stream page is open
(keys.preview_watch) the producer hands over the captured picture too, and the preview is made
from it at WATCHED_WIDTH: the page shows the camera at its own size, not a 320 px frame scaled up.
Written under keys.preview with a short TTL and pushed on keys.preview_channel in one round trip;
a Redis error never reaches the producer's loop (the preview is best effort, the ledger is not touched).
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import redis

from common import keys
from common.images import Picture, YuvImage, picture_size
from common.redis_client import describe
from common.wire import Frame, Preview, encode_preview

log = logging.getLogger(__name__)

#: Overview tiles are a few hundred pixels wide: 4 previews a second look live and cost little.
PREVIEW_FPS = 4.0
#: A stream page is open (keys.preview_watch): the larger view is updated at least 5 times a second.
WATCHED_FPS = 10.0
#: Width of a re-encoded preview (tiles are ~320 px wide).
PREVIEW_WIDTH = 320
#: Width of a watched stream's preview, made from the captured picture (the stream page is ~960 px).
WATCHED_WIDTH = 960
WATCHED_QUALITY = 80
#: A batch JPEG at most this wide and this large is sent as it is (no decode, no encode).
REUSE_MAX_WIDTH = 480
REUSE_MAX_BYTES = 40_000
#: Re-encoded previews need no more quality than this on a small tile.
PREVIEW_QUALITY = 70
#: The watch flag is read at most this often (one GET, not one a frame).
WATCH_CHECK_S = 1.0


def watched_jpeg(image: Picture, *, width: int = WATCHED_WIDTH) -> bytes:
    """A large preview from the captured picture (never upscaled)."""
    w, h = picture_size(image)
    if isinstance(image, YuvImage):
        if w > width:
            image = image.resized(width, max(1, round(h * width / w)))
        return image.jpeg(WATCHED_QUALITY)
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, WATCHED_QUALITY])
    return buf.tobytes() if ok else b""


def preview_jpeg(frame: Frame, *, width: int = PREVIEW_WIDTH) -> tuple[bytes, bool]:
    """(JPEG bytes, reused): the batch frame's own JPEG when small enough, else a downscaled copy."""
    if frame.enc == "jpeg" and frame.dw <= REUSE_MAX_WIDTH and len(frame.data) <= REUSE_MAX_BYTES:
        return frame.data, True
    if frame.enc == "jpeg":
        flag = cv2.IMREAD_COLOR
        if frame.dw >= 4 * width:
            flag = cv2.IMREAD_REDUCED_COLOR_4
        elif frame.dw >= 2 * width:
            flag = cv2.IMREAD_REDUCED_COLOR_2
        img = cv2.imdecode(np.frombuffer(frame.data, np.uint8), flag)
    else:
        img = np.frombuffer(frame.data, np.uint8).reshape(frame.dh, frame.dw, 3)
    if img is None:  # a JPEG that does not decode: no preview this time
        return b"", False
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_QUALITY])
    return (buf.tobytes() if ok else b""), False


class PreviewWriter:
    """Call `offer(frames, seq0)` after each enqueued batch; it writes a preview when one is due."""

    def __init__(
        self, client: redis.Redis, stream: str, *, fps: float = PREVIEW_FPS, watched_fps: float = WATCHED_FPS
    ) -> None:
        self.client = client
        self.stream = stream
        self.fps = fps
        self.watched_fps = watched_fps
        self._next = 0.0
        self._watched = False
        self._watch_checked = -WATCH_CHECK_S
        #: Measured: previews written, reused batch JPEGs, bytes written, seconds spent.
        self.written = 0
        self.reused = 0
        self.large = 0  # made from the captured picture, for a stream page
        self.bytes = 0
        self.seconds = 0.0

    @property
    def watched(self) -> bool:
        """A stream page is open (read from Redis at most once per WATCH_CHECK_S; an error: no)."""
        now = time.monotonic()
        if now - self._watch_checked >= WATCH_CHECK_S:
            self._watch_checked = now
            try:
                self._watched = bool(self.client.exists(keys.preview_watch(self.stream)))
            except redis.RedisError:
                self._watched = False
        return self._watched

    def offer(self, frames: list[Frame], seq0: int | None, images: list[Picture | None] | None = None) -> None:
        """Write previews of this batch's frames that are due (capture times at least 1/rate apart).

        `images`: the captured pictures of `frames` (the runner keeps them only while `watched`);
        a watched preview is made from one at WATCHED_WIDTH."""
        if not frames or seq0 is None or self.fps <= 0:
            return
        if frames[-1].t_capture < self._next:
            return
        t0 = time.perf_counter()
        try:
            watched = self.watched
            gap = 1.0 / (max(self.fps, self.watched_fps) if watched else self.fps)
            with self.client.pipeline(transaction=False) as pipe:
                for i, frame in enumerate(frames):
                    if frame.t_capture < self._next:
                        continue
                    # On schedule (4 a second on average whatever the source's rate), never a burst after a gap.
                    on_time = frame.t_capture - self._next < gap
                    self._next = (self._next if on_time else frame.t_capture) + gap
                    image = images[i] if watched and images is not None else None
                    if image is not None and picture_size(image)[0] > frame.dw:
                        jpeg, reused = watched_jpeg(image), False
                        self.large += 1
                    else:
                        jpeg, reused = preview_jpeg(frame)
                    if not jpeg:
                        continue
                    payload = encode_preview(Preview(seq0 + i, jpeg, w=frame.w, h=frame.h, t=frame.t_capture))
                    pipe.set(keys.preview(self.stream), payload, ex=keys.PREVIEW_TTL_S)
                    pipe.publish(keys.preview_channel(self.stream), payload)
                    self.written += 1
                    self.reused += int(reused)
                    self.bytes += len(payload)
                pipe.execute()
        except redis.RedisError as exc:
            log.debug("stream %s: preview not written: %s", self.stream, describe(exc))
        finally:
            self.seconds += time.perf_counter() - t0
