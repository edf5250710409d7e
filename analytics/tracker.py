"""One stream's tracker: ours (analytics/bytetrack.py), or Ultralytics' BYTETracker / BOT-SORT fed boxes
without images.

Ultralytics numbers tracks with one counter per process (BaseTrack._count), shared by every
stream it tracks; here each stream's tracks get ids of their own, handed out in blocks from a
Redis counter (`rtai:trackids:<stream>`), so an id is never reused in a stream, even after
another process takes the stream over.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import redis
from ultralytics.trackers.bot_sort import BOTSORT
from ultralytics.trackers.byte_tracker import BYTETracker

from common import keys
from common.analytics_settings import TrackSettings

from .bytetrack import ByteTrack

#: Ids reserved per Redis round trip; a takeover wastes at most one block.
ID_BLOCK = 64


class Detections:
    """The results-like object BYTETracker.update reads: xywh, xyxy, conf, cls, len, boolean indexing."""

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray) -> None:
        self.data = data  # (N, 6): x1, y1, x2, y2, conf, cls

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: np.ndarray) -> Detections:
        return Detections(self.data[index])

    @property
    def xyxy(self) -> np.ndarray:
        return self.data[:, :4]

    @property
    def xywh(self) -> np.ndarray:
        d = self.data
        return np.stack([(d[:, 0] + d[:, 2]) / 2, (d[:, 1] + d[:, 3]) / 2, d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]], 1)

    @property
    def conf(self) -> np.ndarray:
        return self.data[:, 4]

    @property
    def cls(self) -> np.ndarray:
        return self.data[:, 5]


class IdBlocks:
    """Track ids of one stream: INCRBY a block of ID_BLOCK on the stream's counter, use it up, repeat."""

    def __init__(self, client: redis.Redis, stream: str, block: int = ID_BLOCK) -> None:
        self.client, self.key, self.block = client, keys.track_ids(stream), block
        self.next = self.end = 0

    def __call__(self) -> int:
        if self.next >= self.end:
            self.end = int(self.client.incrby(self.key, self.block))
            self.next = self.end - self.block
        self.next += 1
        return self.next


def make_tracker(settings: TrackSettings) -> BYTETracker:
    args = SimpleNamespace(
        **settings.model_dump(exclude={"reorder_wait_s"}),
        gmc_method="none",  # no images here: no camera-motion compensation
        proximity_thresh=0.5,
        appearance_thresh=0.8,
        with_reid=False,
        model="auto",
    )
    cls = BOTSORT if settings.tracker_type == "botsort" else BYTETracker
    return cls(args)


class StreamTracker:
    """Ultralytics' tracker with the stream's own ids; `update` as ByteTrack.update."""

    def __init__(self, settings: TrackSettings, allocate: Callable[[], int]) -> None:
        self.tracker = make_tracker(settings)
        self.allocate = allocate
        self.ids: dict[int, int] = {}  # Ultralytics' id -> the stream's id

    def update(self, boxes: np.ndarray) -> tuple[np.ndarray, set[int]]:
        """Track one frame's boxes (N, 6) -> rows x1, y1, x2, y2, track id, conf, cls; and the ids still alive
        (tracked or lost but not yet removed)."""
        out = self.tracker.update(Detections(boxes.astype(np.float32, copy=False)))
        rows = np.zeros((len(out), 7), dtype=np.float64)
        for i, row in enumerate(out):
            own = self.ids.get(int(row[4]))
            if own is None:
                own = self.ids[int(row[4])] = self.allocate()
            rows[i, :4], rows[i, 4], rows[i, 5], rows[i, 6] = row[:4], own, row[5], row[6]
        alive_inner = {t.track_id for t in self.tracker.tracked_stracks} | {
            t.track_id for t in self.tracker.lost_stracks
        }
        for inner in [k for k in self.ids if k not in alive_inner]:
            del self.ids[inner]
        return rows, {self.ids[k] for k in alive_inner if k in self.ids}


def stream_tracker(settings: TrackSettings, allocate: Callable[[], int]) -> ByteTrack | StreamTracker:
    """The stream's tracker as its settings name it: ours by default, Ultralytics' on request."""
    if settings.tracker_type == "bytetrack":
        return ByteTrack(allocate=allocate, **settings.model_dump(exclude={"tracker_type", "reorder_wait_s"}))
    return StreamTracker(settings, allocate)
