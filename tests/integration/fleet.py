"""Shared helpers for integration tests: put batches on a real Redis, read the outcome."""

from __future__ import annotations

import time

import numpy as np
import redis

from common import ledger
from common.config import ProducerSettings
from common.images import encode_frame
from common.wire import Frame
from producer.enqueue import BatchSink


def sink(client: redis.Redis, stream: str, **over: object) -> BatchSink:
    settings = ProducerSettings(stream=stream, source="test", redis_url="redis://unused", **over)
    s = BatchSink(client, settings)
    s.register()
    return s


def frames(n: int, *, size: tuple[int, int] = (64, 48), t_capture: float | None = None) -> list[Frame]:
    rng = np.random.default_rng(n)
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    t = time.time() if t_capture is None else t_capture
    return [encode_frame(img, seq=0, t_capture=t, imgsz=320) for _ in range(n)]


def counts(client: redis.Redis, stream: str) -> dict[str, int]:
    return ledger.read(client, stream)
