"""The job functions workers run. Only names in ALLOWED may run: RQ imports any dotted name."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import redis

from common import ledger
from common.errors import FrameDecodeError, SchemaError
from common.images import decode_frame
from common.redis_client import describe, write_rejected
from common.wire import Batch, decode_batch, encode_result

from . import runtime
from .publisher import Settlement

log = logging.getLogger(__name__)


def process_batch(*, stream: str, batch: int, blob: str, n: int, seq0: int) -> dict[str, Any]:
    """Detect objects in one stored batch, publish one result per frame, account for every frame."""
    rt = runtime.current()
    t_start = rt.now()  # Redis time, like the producer's t_capture: host clocks may disagree
    data = rt.client.get(blob)
    if data is None:
        if rt.publisher.is_settled(stream, batch):
            return {"status": "duplicate"}
        rt.publisher.settle(Settlement(stream, batch, failed=n))
        raise SchemaError(f"batch {stream}#{batch}: data {blob} is gone (expired?); {n} frames counted failed")
    try:
        b = decode_batch(data)
        if b.stream != stream or b.batch != batch or len(b.frames) != n:
            raise SchemaError(
                f"batch {stream}#{batch}: payload says {b.stream}#{b.batch} with {len(b.frames)} frames, job says {n}"
            )
    except SchemaError:
        rt.publisher.settle(Settlement(stream, batch, failed=n))
        raise
    return _detect_and_settle(rt, b, t_start)


def _detect_and_settle(rt: runtime.Runtime, b: Batch, t_start: float) -> dict[str, Any]:
    max_age = rt.settings.max_frame_age_ms / 1000.0
    settlement = Settlement(b.stream, b.batch)
    errors: list[str] = []
    live = []
    images: list[np.ndarray] = []
    for frame in b.frames:
        if t_start - frame.t_capture > max_age:
            settlement.stale += 1
            continue
        try:
            images.append(decode_frame(frame))
        except FrameDecodeError as exc:
            settlement.failed += 1
            errors.append(str(exc))
            continue
        live.append(frame)
    boxes_per_frame = []
    if images:
        rt.fault("during_inference")
        boxes_per_frame = rt.detector(b.model, b.half).predict(images, conf=b.conf, imgsz=b.imgsz)
    t_done = rt.now()
    for frame, boxes in zip(live, boxes_per_frame, strict=True):
        sx, sy = frame.w / frame.dw, frame.h / frame.dh
        scaled = [
            [
                round(float(x1) * sx, 1),
                round(float(y1) * sy, 1),
                round(float(x2) * sx, 1),
                round(float(y2) * sy, 1),
                round(float(c), 4),
                int(k),
            ]
            for x1, y1, x2, y2, c, k in boxes.tolist()
        ]
        settlement.messages.append(
            encode_result(
                {
                    "stream": b.stream,
                    "seq": frame.seq,
                    "batch": b.batch,
                    "t_capture": frame.t_capture,
                    "t_enqueue": b.t_enqueue,
                    "t_start": t_start,
                    "t_done": t_done,
                    "worker": rt.name,
                    "gpu": rt.gpu,
                    "model": b.model,
                    "w": frame.w,
                    "h": frame.h,
                    "boxes": scaled,
                }
            )
        )
    settled = rt.publisher.settle(settlement)
    if settled and live:
        _record_latencies(rt, b.stream, [(t_done - f.t_capture) * 1000 for f in live])
    rt.fault("after_publish")
    if errors:
        raise FrameDecodeError(f"batch {b.stream}#{b.batch}: {len(errors)} frame(s) failed: " + "; ".join(errors))
    return {
        "status": "settled" if settled else "duplicate",
        "published": len(settlement.messages),
        "stale": settlement.stale,
    }


def _record_latencies(rt: runtime.Runtime, stream: str, latencies_ms: list[float]) -> None:
    """The latency histogram is a statistic: when Redis refuses the write (full), skip it."""
    try:
        with rt.client.pipeline(transaction=False) as pipe:
            ledger.record_latencies(pipe, stream, latencies_ms)
            pipe.execute()
    except redis.ResponseError as exc:
        if not write_rejected(exc):
            raise
        log.warning("%s: latency of %d frames not recorded: %s", rt.name, len(latencies_ms), describe(exc))


#: The only job functions a worker runs, by the dotted name RQ stores.
ALLOWED = {"worker.jobs.process_batch": process_batch}
