"""The job functions workers run. Only names in ALLOWED may run: RQ imports any dotted name."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import redis
from redis.typing import EncodableT, FieldT

from common import keys, ledger
from common.errors import FrameDecodeError, ModelError, SchemaError
from common.redis_client import describe, write_rejected
from common.states import StreamState
from common.wire import Batch, Result, decode_batch, encode_result

from . import runtime
from .decode import decode_frames
from .publisher import Settlement
from .snapshots import keep_snapshots

log = logging.getLogger(__name__)


def process_batch(*, stream: str, batch: int, blob: str, n: int) -> dict[str, Any]:
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
    fresh = [f for f in b.frames if t_start - f.t_capture <= max_age]
    settlement.stale += len(b.frames) - len(fresh)
    for frame, image in zip(fresh, decode_frames(fresh), strict=True):
        if isinstance(image, FrameDecodeError):
            settlement.failed += 1
            errors.append(str(image))
            continue
        images.append(image)
        live.append(frame)
    boxes_per_frame = []
    if images:
        rt.fault("during_inference")
        rt.fault_on_batch(b.stream, b.batch)
        try:
            detector = rt.detector(b.model, b.half)
        except ModelError as exc:
            _model_failed(rt, b, settlement, live, exc)
            raise
        classes = None if b.classes is None else [i for i, n in enumerate(detector.names) if n in b.classes]
        boxes_per_frame = detector.predict(images, conf=b.conf, imgsz=b.imgsz, classes=classes)
        if b.stream not in rt.model_ok_streams:
            _model_recovered(rt, b.stream)
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
                Result(
                    stream=b.stream,
                    seq=frame.seq,
                    batch=b.batch,
                    t_capture=frame.t_capture,
                    t_enqueue=b.t_enqueue,
                    t_start=t_start,
                    t_done=t_done,
                    worker=rt.name,
                    gpu=rt.gpu,
                    model=b.model,
                    w=frame.w,
                    h=frame.h,
                    boxes=scaled,
                )
            )
        )
    if b.snapshots:  # before the results are out: the tracking stage extends the TTL of an event's frame
        keep_snapshots(rt.client, b.stream, live, settlement.messages)
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


def _model_failed(rt: runtime.Runtime, b: Batch, settlement: Settlement, live: list, exc: ModelError) -> None:
    """The model cannot load: count the batch's frames failed now (retrying would fail the same way)
    and put the stream in `error` with the reason, where `rtai status` and the API show it."""
    settlement.failed += len(live)
    rt.publisher.settle(settlement)
    reason = str(exc)[:500]
    state: dict[FieldT, EncodableT] = {
        "state": StreamState.ERROR.value,
        "reason": reason,
        "t_state": rt.now(),
        "model_error": reason,
    }
    rt.client.hset(keys.stream(b.stream), mapping=state)
    rt.model_ok_streams.discard(b.stream)


def _model_recovered(rt: runtime.Runtime, stream: str) -> None:
    """The stream's model works here (checked once per stream per worker, and again after a failure):
    a stream in `error` for its model (reason unchanged since a worker set it) is running again."""
    rt.model_ok_streams.add(stream)
    key = keys.stream(stream)
    state, reason, model_error = rt.client.hmget(key, "state", "reason", "model_error")
    if model_error is None:
        return
    if state == StreamState.ERROR.value.encode() and reason == model_error:
        rt.client.hset(key, mapping={"state": StreamState.RUNNING.value, "reason": "", "t_state": rt.now()})
    rt.client.hdel(key, "model_error")


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
