"""JPEG decode of a batch's frames in a small thread pool (OpenCV releases the GIL while decoding)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common.errors import FrameDecodeError
from common.images import decode_frame
from common.wire import Frame

from .threads import available_cores

#: Decoding more frames at once than cores only adds switching.
MAX_DECODE_THREADS = 4

_pool: ThreadPoolExecutor | None = None


def _decode_one(frame: Frame) -> np.ndarray | FrameDecodeError:
    try:
        return decode_frame(frame)
    except FrameDecodeError as exc:
        return exc


def decode_frames(frames: list[Frame]) -> list[np.ndarray | FrameDecodeError]:
    """Each frame's image, or the error that says why it does not decode, in order."""
    global _pool
    if len(frames) < 2 or available_cores() < 2:
        return [_decode_one(f) for f in frames]
    if _pool is None:
        _pool = ThreadPoolExecutor(min(MAX_DECODE_THREADS, available_cores()), thread_name_prefix="rtai-decode")
    return list(_pool.map(_decode_one, frames))
