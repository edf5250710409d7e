"""The wire format: versioned msgpack for batches, results and RQ jobs, decoded with bounds.

Batch (one RQ job's input, stored under keys.batch_blob):
  {"v": 1, "stream": str, "batch": int, "model": str, "conf": float, "imgsz": int,
   "t_enqueue": float, "half": bool | None, "classes": [str, ...] (optional: names the model keeps),
   "snapshots": true (optional: keep each frame's JPEG for events),
   "frames": [{"seq": int, "t_capture": float, "w": int, "h": int,
   "enc": "jpeg" | "raw", "dw": int, "dh": int, "data": bytes}, ...]}
  w, h: the camera frame's size; dw, dh: the encoded image's size (resized to fit imgsz).

Job kwargs (JobArgs, the only thing an RQ job carries):
  {"stream": str, "batch": int, "blob": keys.batch_blob(stream, batch), "n": int}

Result (one pub/sub message per frame, also kept in keys.history):
  {"v": 1, "stream": str, "seq": int, "batch": int, "t_capture": float, "t_enqueue": float,
   "t_start": float, "t_done": float, "worker": str, "gpu": str, "model": str, "w": int, "h": int,
   "boxes": [[x1, y1, x2, y2, conf, cls], ...]}  (original pixels; cls an int, the rest numbers)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from . import keys
from .errors import ConfigError, SchemaError

VERSION = 1
#: Bounds on every decode: a hostile or broken payload cannot make a process allocate gigabytes.
MAX_BIN = 64 * 1024 * 1024
MAX_STR = 1024 * 1024
MAX_ARRAY = 4096
MAX_MAP = 64
MAX_FRAMES = 256
#: A result lists at most this many boxes (the decode bound on arrays).
MAX_BOXES = MAX_ARRAY
MAX_SIDE = 16_384
#: A box coordinate lies within this many pixels of the frame (boxes may overhang a little, never by
#: more than a frame): anything else (inf, 3.4e38) is a forged or broken result.
MAX_BOX_COORD = 2 * MAX_SIDE
#: Class ids are small whole numbers (a model has at most a few thousand classes).
MAX_CLASS_ID = 1 << 20
#: Producers resize frames so the long side is at most imgsz, and imgsz is at most this.
MAX_IMGSZ = 4096
#: One frame decodes to at most this many pixels (4096 x 4096, 48 MiB as BGR).
MAX_FRAME_PIXELS = MAX_IMGSZ * MAX_IMGSZ
#: One batch decodes to at most this many bytes (BGR): a forged batch cannot exhaust a worker's memory.
MAX_BATCH_DECODED_BYTES = 512 * 1024 * 1024
ENCODINGS = ("jpeg", "raw")


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    t_capture: float
    w: int
    h: int
    enc: str
    dw: int
    dh: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    stream: str
    batch: int
    model: str
    conf: float
    imgsz: int
    t_enqueue: float
    frames: list[Frame] = field(default_factory=list)
    #: FP16 wanted by the stream (None: the worker's own setting); only CUDA workers use it.
    half: bool | None = None
    #: Class names the stream keeps (None: all): the worker passes them to the model.
    classes: list[str] | None = None
    #: Keep each frame's JPEG briefly (keys.snapshot) so the tracking stage can keep an event's frame.
    snapshots: bool = False


@dataclass(frozen=True, slots=True)
class JobArgs:
    """The kwargs of the one job function: exactly what a producer sends, checked before any run."""

    stream: str
    batch: int
    blob: str
    n: int

    @classmethod
    def for_batch(cls, stream: str, batch: int, n: int) -> JobArgs:
        """A producer's job kwargs, checked against the same contract a worker checks them with."""
        return cls.from_kwargs({"stream": stream, "batch": batch, "blob": keys.batch_blob(stream, batch), "n": n})

    @classmethod
    def from_kwargs(cls, kwargs: object) -> JobArgs:
        """Validate a job's kwargs against the contract; any deviation is a SchemaError."""
        if not isinstance(kwargs, dict):
            raise SchemaError(f"job kwargs: expected a map, got {type(kwargs).__name__}")
        names = set(kwargs)
        if names != JOB_KWARGS:
            missing, extra = sorted(JOB_KWARGS - names, key=str), sorted(names - JOB_KWARGS, key=str)
            raise SchemaError(f"job kwargs: missing {missing}, unexpected {extra}")
        stream = _get(kwargs, "stream", str, "job kwargs")
        try:
            keys.check_stream_id(stream)
        except ConfigError as exc:
            raise SchemaError(f"job kwargs: {exc}") from exc
        batch = _get(kwargs, "batch", int, "job kwargs")
        n = _get(kwargs, "n", int, "job kwargs")
        blob = _get(kwargs, "blob", str, "job kwargs")
        if batch < 0:
            raise SchemaError(f"job kwargs: batch={batch} must not be negative")
        if not 1 <= n <= MAX_FRAMES:
            raise SchemaError(f"job kwargs: n={n} is outside 1..{MAX_FRAMES}")
        own = keys.batch_blob(stream, batch)
        if blob != own:
            raise SchemaError(f"job kwargs: blob {blob[:100]!r} is not batch {stream}#{batch}'s key {own!r}")
        return cls(stream=stream, batch=batch, blob=blob, n=n)

    def to_kwargs(self) -> dict[str, Any]:
        return {"stream": self.stream, "batch": self.batch, "blob": self.blob, "n": self.n}


@dataclass(frozen=True, slots=True)
class Result:
    """One frame's detections, as a worker publishes them: times are Redis-clock seconds."""

    stream: str
    seq: int
    batch: int
    t_capture: float
    t_enqueue: float
    t_start: float
    t_done: float
    worker: str
    gpu: str
    model: str
    #: The camera frame's size: boxes are in its pixels.
    w: int
    h: int
    #: [x1, y1, x2, y2, conf, cls] per object.
    boxes: list[list[float | int]] = field(default_factory=list)

    @property
    def latency_ms(self) -> float:
        """Capture to published, in milliseconds."""
        return (self.t_done - self.t_capture) * 1000

    def to_map(self) -> dict[str, Any]:
        """The result as its wire map (what `encode_result` packs and `rtai subscribe --json` prints)."""
        return {
            "v": VERSION,
            "stream": self.stream,
            "seq": self.seq,
            "batch": self.batch,
            "t_capture": self.t_capture,
            "t_enqueue": self.t_enqueue,
            "t_start": self.t_start,
            "t_done": self.t_done,
            "worker": self.worker,
            "gpu": self.gpu,
            "model": self.model,
            "w": self.w,
            "h": self.h,
            "boxes": self.boxes,
        }


#: The kwargs names of a job, no more, no fewer.
JOB_KWARGS = frozenset(JobArgs.__dataclass_fields__)


def packb(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpackb(data: object) -> Any:
    """Bounded msgpack decode of a Redis reply or payload; anything but bytes, and any failure, is a SchemaError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError(f"expected msgpack bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            max_bin_len=MAX_BIN,
            max_str_len=MAX_STR,
            max_array_len=MAX_ARRAY,
            max_map_len=MAX_MAP,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException, msgpack.ExtraData) as exc:
        raise SchemaError(f"malformed msgpack: {exc}") from exc


class MsgpackSerializer:
    """RQ serializer: msgpack instead of pickle, so no Redis payload can execute code."""

    @staticmethod
    def dumps(obj: Any, /) -> bytes:
        return packb(obj)

    @staticmethod
    def loads(data: bytes, /) -> Any:
        return unpackb(data)


#: Import path for `rq info --serializer` and RQ's own CLI.
SERIALIZER_PATH = "common.wire.MsgpackSerializer"


def _get(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in obj:
        raise SchemaError(f"{where}: missing field {name!r}")
    value = obj[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SchemaError(f"{where}: field {name!r} has type {type(value).__name__}")
    return value


def _optional_bool(obj: dict[str, Any], name: str) -> bool | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, bool):
        raise SchemaError(f"batch: field {name!r} has type {type(value).__name__}")
    return value


def _optional_names(obj: dict[str, Any], name: str) -> list[str] | None:
    value = obj.get(name)
    if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise SchemaError(f"batch: field {name!r} is not a list of names")
    return value


def _side(obj: dict[str, Any], name: str, where: str) -> int:
    value: int = _get(obj, name, int, where)
    if not 1 <= value <= MAX_SIDE:
        raise SchemaError(f"{where}: {name}={value} is outside 1..{MAX_SIDE}")
    return value


def _check_decoded_size(frame: Frame, imgsz: int, where: str) -> int:
    """The frame's decoded size in bytes (BGR); SchemaError when it is larger than a producer sends."""
    if max(frame.dw, frame.dh) > imgsz:
        raise SchemaError(f"{where}: {frame.dw}x{frame.dh} is larger than the batch's imgsz {imgsz}")
    if frame.dw * frame.dh > MAX_FRAME_PIXELS:
        raise SchemaError(f"{where}: {frame.dw}x{frame.dh} is over the {MAX_FRAME_PIXELS} pixel cap")
    return frame.dw * frame.dh * 3


def encode_batch(batch: Batch) -> bytes:
    return packb(
        {
            "v": VERSION,
            "stream": batch.stream,
            "batch": batch.batch,
            "model": batch.model,
            "conf": batch.conf,
            "imgsz": batch.imgsz,
            "t_enqueue": batch.t_enqueue,
            "half": batch.half,
            **({"classes": batch.classes} if batch.classes is not None else {}),
            **({"snapshots": True} if batch.snapshots else {}),
            "frames": [
                {
                    "seq": f.seq,
                    "t_capture": f.t_capture,
                    "w": f.w,
                    "h": f.h,
                    "enc": f.enc,
                    "dw": f.dw,
                    "dh": f.dh,
                    "data": f.data,
                }
                for f in batch.frames
            ],
        }
    )


def decode_batch(data: object) -> Batch:
    obj = unpackb(data)
    if not isinstance(obj, dict):
        raise SchemaError(f"batch: expected a map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != VERSION:
        raise SchemaError(f"batch: unsupported version {version!r} (this worker reads v{VERSION})")
    frames_raw = _get(obj, "frames", list, "batch")
    if not 1 <= len(frames_raw) <= MAX_FRAMES:
        raise SchemaError(f"batch: {len(frames_raw)} frames, expected 1..{MAX_FRAMES}")
    imgsz = _get(obj, "imgsz", int, "batch")
    if not 32 <= imgsz <= MAX_IMGSZ:
        raise SchemaError(f"batch: imgsz={imgsz} is outside 32..{MAX_IMGSZ}")
    frames = []
    decoded_bytes = 0
    for i, fr in enumerate(frames_raw):
        where = f"batch frame {i}"
        if not isinstance(fr, dict):
            raise SchemaError(f"{where}: expected a map")
        enc = _get(fr, "enc", str, where)
        if enc not in ENCODINGS:
            raise SchemaError(f"{where}: unknown encoding {enc!r}")
        frames.append(
            Frame(
                seq=_get(fr, "seq", int, where),
                t_capture=_get(fr, "t_capture", float, where),
                w=_side(fr, "w", where),
                h=_side(fr, "h", where),
                enc=enc,
                dw=_side(fr, "dw", where),
                dh=_side(fr, "dh", where),
                data=_get(fr, "data", bytes, where),
            )
        )
        decoded_bytes += _check_decoded_size(frames[-1], imgsz, where)
    if decoded_bytes > MAX_BATCH_DECODED_BYTES:
        raise SchemaError(
            f"batch: frames decode to {decoded_bytes >> 20} MiB, over the {MAX_BATCH_DECODED_BYTES >> 20} MiB cap"
        )
    conf = _get(obj, "conf", float, "batch")
    if not 0.0 <= conf <= 1.0:
        raise SchemaError(f"batch: conf={conf} is outside 0..1")
    return Batch(
        stream=_get(obj, "stream", str, "batch"),
        batch=_get(obj, "batch", int, "batch"),
        model=_get(obj, "model", str, "batch"),
        conf=conf,
        imgsz=imgsz,
        t_enqueue=_get(obj, "t_enqueue", float, "batch"),
        half=_optional_bool(obj, "half"),
        classes=_optional_names(obj, "classes"),
        snapshots=bool(_optional_bool(obj, "snapshots")),
        frames=frames,
    )


def encode_result(result: Result) -> bytes:
    return packb(result.to_map())


def _box(raw: object, where: str) -> list[float | int]:
    if not isinstance(raw, list) or len(raw) != 6:
        raise SchemaError(f"{where}: expected [x1, y1, x2, y2, conf, cls]")
    *coords, cls = raw
    for value in coords:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise SchemaError(f"{where}: {type(value).__name__} where a number belongs")
    if not isinstance(cls, int) or isinstance(cls, bool):
        raise SchemaError(f"{where}: class has type {type(cls).__name__}")
    if not all(math.isfinite(v) for v in coords):
        raise SchemaError(f"{where}: a box has a non-finite value")
    if any(abs(v) > MAX_BOX_COORD for v in coords[:4]):
        raise SchemaError(f"{where}: a box coordinate is beyond +-{MAX_BOX_COORD}")
    if not 0 <= cls < MAX_CLASS_ID:
        raise SchemaError(f"{where}: a box's class is outside 0..{MAX_CLASS_ID - 1}")
    return [*coords, cls]


def _check_box_values(boxes: np.ndarray, where: str) -> None:
    """Every value finite, coordinates within MAX_BOX_COORD, conf finite, class in 0..MAX_CLASS_ID."""
    if not boxes.size:
        return
    if not np.isfinite(boxes).all():
        raise SchemaError(f"{where}: a box has a non-finite value")
    if (np.abs(boxes[:, :4]) > MAX_BOX_COORD).any():
        raise SchemaError(f"{where}: a box coordinate is beyond +-{MAX_BOX_COORD}")
    if ((boxes[:, 5] < 0) | (boxes[:, 5] >= MAX_CLASS_ID)).any():
        raise SchemaError(f"{where}: a box's class is outside 0..{MAX_CLASS_ID - 1}")


def decode_result(data: object) -> Result:
    """A Result from its bytes; SchemaError naming the first field that is missing or of the wrong type."""
    obj, boxes_raw = _result_map(data)
    return _result(obj, [_box(box, f"result box {i}") for i, box in enumerate(boxes_raw)])


def decode_result_boxes(data: object) -> tuple[Result, np.ndarray]:
    """decode_result for a reader that wants the boxes as one (N, 6) float array (the tracking stage): the
    same checks, the boxes checked as a whole (six numbers each, a whole class); Result.boxes is empty."""
    obj, boxes_raw = _result_map(data)
    try:
        boxes = np.array(boxes_raw)  # numbers only -> an int or float array; anything else -> another dtype
    except ValueError as exc:  # ragged
        raise SchemaError("result: boxes are not [x1, y1, x2, y2, conf, cls] each") from exc
    if boxes.dtype.kind not in "if" or boxes.size and boxes.shape[1:] != (6,):
        raise SchemaError("result: boxes are not [x1, y1, x2, y2, conf, cls] each, numbers only")
    boxes = boxes.astype(np.float64, copy=False).reshape(-1, 6)
    _check_box_values(boxes, "result")
    if not np.array_equal(boxes[:, 5], np.trunc(boxes[:, 5])):
        raise SchemaError("result: a box's class is not a whole number")
    return _result(obj, []), boxes


def _result_map(data: object) -> tuple[dict[str, Any], list[Any]]:
    obj = unpackb(data)
    if not isinstance(obj, dict):
        raise SchemaError(f"result: expected a map, got {type(obj).__name__}")
    version = obj.get("v")
    if version != VERSION:
        raise SchemaError(f"result: unsupported version {version!r} (this reader reads v{VERSION})")
    boxes_raw = _get(obj, "boxes", list, "result")
    if len(boxes_raw) > MAX_BOXES:
        raise SchemaError(f"result: {len(boxes_raw)} boxes, over {MAX_BOXES}")
    return obj, boxes_raw


def _time(obj: dict[str, Any], name: str) -> float:
    value = _get(obj, name, float, "result")
    if not np.isfinite(value):
        raise SchemaError(f"result: field {name!r} is not finite")
    return float(value)


def _result(obj: dict[str, Any], boxes: list[list[float | int]]) -> Result:
    return Result(
        stream=_get(obj, "stream", str, "result"),
        seq=_get(obj, "seq", int, "result"),
        batch=_get(obj, "batch", int, "result"),
        t_capture=_time(obj, "t_capture"),
        t_enqueue=_time(obj, "t_enqueue"),
        t_start=_time(obj, "t_start"),
        t_done=_time(obj, "t_done"),
        worker=_get(obj, "worker", str, "result"),
        gpu=_get(obj, "gpu", str, "result"),
        model=_get(obj, "model", str, "result"),
        w=_side(obj, "w", "result"),
        h=_side(obj, "h", "result"),
        boxes=boxes,
    )
