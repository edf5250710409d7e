"""The job functions workers run. Only names in ALLOWED may run: RQ imports any dotted name."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import redis
from redis.typing import EncodableT, FieldT

from common import keys, ledger, scripts
from common.errors import FrameDecodeError, ModelError, SchemaError
from common.redis_client import describe, write_rejected
from common.states import StreamState
from common.wire import Batch, Frame, JobArgs, Result, decode_batch, encode_result

from . import runtime
from .broker import StaleFrames
from .decode import decode_frames
from .group import Group, Outcome
from .publisher import Settlement
from .snapshots import keep_snapshots

if TYPE_CHECKING:
    from .prefetch import Prepared

log = logging.getLogger(__name__)

#: What a detector call raises over a bad batch or a device fault (torch: RuntimeError, CUDA out of
#: memory included). In a call over several jobs' batches, the batches run again one by one.
DETECT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def process_batch(*, stream: str, batch: int, blob: str, n: int) -> dict[str, Any]:
    """The job function producers enqueue (by this name; ALLOWED): one batch run on its own, as
    RQ's own worker would call it. The fleet's worker runs groups through run_group instead."""
    latencies: list[tuple[str, list[float]]] = []
    outcomes = _run(runtime.current(), [("", JobArgs(stream, batch, blob, n))], {}, None, latencies)
    if latencies:
        write_latencies(runtime.current(), latencies)
    result = outcomes[""]
    if isinstance(result, BaseException):
        raise result
    return result


def run_group(rt: runtime.Runtime, group: Group) -> None:
    """Run a group's jobs in as few detector calls as their settings allow; each job's outcome and
    the latencies of the frames settled are left in the group."""
    jobs = [(j.id, j.args) for j in group.jobs]
    group.outcomes = _run(rt, jobs, group.ready, group.stage, group.latencies, group.stored)


@dataclass
class _Held:
    """One job's batch on its way through decode, detection and settle."""

    job_id: str
    b: Batch
    settlement: Settlement
    live: list[Frame] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Images a prefetch decoded, by frame seq (the others are decoded here).
    decoded: dict[int, np.ndarray | FrameDecodeError] = field(default_factory=dict)
    boxes: list[np.ndarray] = field(default_factory=list)


def _run(
    rt: runtime.Runtime,
    jobs: list[tuple[str, JobArgs]],
    prefetched: dict[str, Prepared],
    stage: Callable[[str], None] | None,
    latencies: list[tuple[str, list[float]]],
    stored: dict[str, bytes | None] | None = None,
) -> dict[str, Outcome]:
    """Decode every job's batch, run one detector call per set of batches with the same settings,
    settle each batch; returns each job's result dict or the error that ends it. `stored`: blobs
    already read (with the job records); the rest are read here."""
    t_start = rt.now()  # Redis time, like the producer's t_capture: host clocks may disagree
    outcomes: dict[str, Outcome] = {}
    held: list[_Held] = []
    stale = StaleFrames(rt.settings.max_frame_age_ms / 1000.0)
    # A prefetched batch is ready (worker/prefetch.py); the others come in one round trip.
    ready = {args.blob: p for _job_id, args in jobs if (p := prefetched.get(args.blob)) is not None}
    rt.prefetched_jobs += len(ready)
    fetched = dict(stored or {})
    missing = [args.blob for _job_id, args in jobs if args.blob not in ready and args.blob not in fetched]
    blobs = cast(list[bytes | None], rt.client.mget(missing) if missing else [])
    fetched.update(zip(missing, blobs, strict=True))
    for job_id, args in jobs:
        prepared = ready.get(args.blob)
        try:
            loaded = _load(rt, args, prepared.batch if prepared is not None else fetched[args.blob])
        except SchemaError as exc:
            outcomes[job_id] = exc
            continue
        if isinstance(loaded, dict):
            outcomes[job_id] = loaded
            continue
        h = _Held(job_id, loaded, Settlement(loaded.stream, loaded.batch))
        h.live, h.settlement.stale = stale.split(loaded.frames, t_start)
        if prepared is not None:
            h.decoded = prepared.images
        held.append(h)
    _decode(held)
    if stage is not None:
        stage("detect")
    groups: dict[tuple, list[_Held]] = {}
    for h in held:
        if h.images:
            key = (h.b.model, h.b.half, h.b.imgsz, h.b.conf, tuple(h.b.classes) if h.b.classes is not None else None)
            groups.setdefault(key, []).append(h)
    for group in groups.values():
        _detect_group(rt, group, outcomes)
    if stage is not None:
        stage("settle")
    t_done = rt.now()
    to_settle = [h for h in held if h.job_id not in outcomes]
    for h in to_settle:
        _results(rt, h, t_start, t_done)
    settled = rt.publisher.settle_many([h.settlement for h in to_settle])  # one round trip for the group
    rt.fault("after_publish")
    for h, done in zip(to_settle, settled, strict=True):
        try:
            outcomes[h.job_id] = _finish(h, done, t_done, latencies)
        except FrameDecodeError as exc:
            outcomes[h.job_id] = exc
    return outcomes


def _load(rt: runtime.Runtime, args: JobArgs, data: bytes | Batch | None) -> Batch | dict[str, Any]:
    """The job's batch, checked against its job (`data`: as stored, or as a prefetch unpacked it)."""
    stream, batch, n = args.stream, args.batch, args.n
    if data is None:
        if rt.publisher.is_settled(stream, batch):
            return {"status": "duplicate"}
        rt.publisher.settle(Settlement(stream, batch, failed=n))
        raise SchemaError(f"batch {stream}#{batch}: data {args.blob} is gone (expired?); {n} frames counted failed")
    try:
        b = data if isinstance(data, Batch) else decode_batch(data)
        if b.stream != stream or b.batch != batch or len(b.frames) != n:
            raise SchemaError(
                f"batch {stream}#{batch}: payload says {b.stream}#{b.batch} with {len(b.frames)} frames, job says {n}"
            )
    except SchemaError:
        rt.publisher.settle(Settlement(stream, batch, failed=n))
        raise
    return b


def _decode(held: list[_Held]) -> None:
    """JPEG decode of every held batch's live frames in one pass of the decode pool (frames a
    prefetch decoded are taken as they are)."""
    todo = [f for h in held for f in h.live if f.seq not in h.decoded]
    fresh = dict(zip(map(id, todo), decode_frames(todo), strict=True))
    for h in held:
        live, h.live = h.live, []
        for frame in live:
            image = h.decoded[frame.seq] if frame.seq in h.decoded else fresh[id(frame)]
            if isinstance(image, FrameDecodeError):
                h.settlement.failed += 1
                h.errors.append(str(image))
                continue
            h.images.append(image)
            h.live.append(frame)


def _detect_group(rt: runtime.Runtime, group: list[_Held], outcomes: dict[str, Outcome]) -> None:
    """One detector call for a group; a failure is each job's own: a model that cannot load fails
    them all (it is theirs), any other error runs them again one by one, so only the culprit fails."""
    try:
        _detect(rt, group)
    except ModelError as exc:
        for h in group:
            _model_failed(rt, h.b, h.settlement, h.live, exc)
            outcomes[h.job_id] = exc
    except DETECT_ERRORS as exc:
        if len(group) == 1:
            outcomes[group[0].job_id] = exc
            return
        log.warning("%s: detector call over %d batches failed (%s); running them one by one", rt.name, len(group), exc)
        for h in group:
            _detect_group(rt, [h], outcomes)


def _detect(rt: runtime.Runtime, group: list[_Held]) -> None:
    """One detector call over the frames of batches that share their settings."""
    rt.fault("during_inference")
    for h in group:
        rt.fault_on_batch(h.b.stream, h.b.batch)
    b = group[0].b
    detector = rt.detector(b.model, b.half)
    classes = None if b.classes is None else [i for i, n in enumerate(detector.names) if n in b.classes]
    if b.classes:
        _say_unknown_classes(rt, {h.b.stream for h in group}, b.model, b.classes, list(detector.names))
    images = [image for h in group for image in h.images]
    t0 = time.perf_counter()
    boxes = detector.predict(images, conf=b.conf, imgsz=b.imgsz, classes=classes)
    rt.count_inference(len(images), time.perf_counter() - t0)
    i = 0
    for h in group:
        h.boxes = list(boxes[i : i + len(h.images)])
        i += len(h.images)
        if h.b.stream not in rt.model_ok_streams:
            _model_recovered(rt, h.b.stream)


def _results(rt: runtime.Runtime, h: _Held, t_start: float, t_done: float) -> None:
    """The batch's result messages, boxes scaled back to camera pixels (and its snapshots kept)."""
    b, settlement, live = h.b, h.settlement, h.live
    for frame, boxes in zip(live, h.boxes, strict=True):
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
                    gated=frame.gated,
                )
            )
        )
    if b.snapshots:  # before the results are out: the tracking stage extends the TTL of an event's frame
        keep_snapshots(rt.client, b.stream, live, settlement.messages)


def _finish(h: _Held, settled: bool, t_done: float, latencies: list[tuple[str, list[float]]]) -> dict[str, Any]:
    """A settled batch's outcome: its latencies (written with the job's records), or its frame errors."""
    b, settlement, live = h.b, h.settlement, h.live
    if settled and live:
        latencies.append((b.stream, [(t_done - f.t_capture) * 1000 for f in live]))
    if h.errors:
        raise FrameDecodeError(f"batch {b.stream}#{b.batch}: {len(h.errors)} frame(s) failed: " + "; ".join(h.errors))
    return {
        "status": "settled" if settled else "duplicate",
        "published": len(settlement.messages),
        "stale": settlement.stale,
    }


def _say_unknown_classes(
    rt: runtime.Runtime, streams: set[str], model: str, wanted: list[str], names: list[str]
) -> None:
    """Classes the model does not have detect nothing: say so in the stream's reason (once per stream
    and model per worker), where `rtai status`, the API and the live view show it."""
    unknown = sorted(set(wanted) - set(names))
    for stream in streams:
        said = (stream, model)
        if not unknown or said in rt.classes_said:
            continue
        rt.classes_said.add(said)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        reason = (
            f"model {model} has no class {', '.join(map(repr, unknown))} (it has {shown}): it detects nothing of them"
        )
        rt.client.hset(keys.stream(stream), "reason", reason[:500])
        log.warning("stream %s: %s", stream, reason)


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
    args = [str(v) for kv in state.items() for v in kv]
    rt.client.eval(scripts.SET_ERROR.source, 2, keys.stream(b.stream), keys.removed(b.stream), *args)
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


def write_latencies(rt: runtime.Runtime, latencies: list[tuple[str, list[float]]]) -> None:
    """The latency histogram is a statistic: when Redis refuses the write (full), skip it."""
    try:
        with rt.client.pipeline(transaction=False) as pipe:
            for stream, latencies_ms in latencies:
                ledger.record_latencies(pipe, stream, latencies_ms)
            pipe.execute()
    except redis.ResponseError as exc:
        if not write_rejected(exc):
            raise
        frames = sum(len(ms) for _stream, ms in latencies)
        log.warning("%s: latency of %d frames not recorded: %s", rt.name, frames, describe(exc))


#: The only job functions a worker runs, by the dotted name RQ stores.
ALLOWED = {"worker.jobs.process_batch": process_batch}
