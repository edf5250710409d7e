"""The wire format: versioned msgpack for batches, results and RQ jobs, decoded with bounds.

Batch (one RQ job's input, stored under keys.batch_blob):
  {"v": 1, "stream": str, "batch": int, "model": str, "conf": float, "imgsz": int,
   "t_enqueue": float, "half": bool | None, "classes": [str, ...] (optional: names the model keeps),
   "snapshots": true (optional: keep each frame's JPEG for events),
   "frames": [{"seq": int, "t_capture": float, "w": int, "h": int,
   "enc": "jpeg" | "raw", "dw": int, "dh": int, "data": bytes, "gated": int (optional)}, ...]}
  w, h: the camera frame's size; dw, dh: the encoded image's size (resized to fit imgsz).
  gated: frames motion gating held back just before this one (producer/motion.py); absent when 0.

Job kwargs (JobArgs, the only thing an RQ job carries):
  {"stream": str, "batch": int, "blob": keys.batch_blob(stream, batch), "n": int}

Result (one pub/sub message per frame, also kept in keys.history):
  {"v": 1, "stream": str, "seq": int, "batch": int, "t_capture": float, "t_enqueue": float,
   "t_start": float, "t_done": float, "worker": str, "gpu": str, "model": str, "w": int, "h": int,
   "boxes": [[x1, y1, x2, y2, conf, cls], ...],  (original pixels; cls an int, the rest numbers)
   "gated": int (optional: the frame's `gated`, absent when 0)}

The records the other roles publish (typed below; each decoder checks every field it reads):
  Preview (producer -> keys.preview and its channel): {"seq": int, "w": int, "h": int, "t": float,
    "jpeg": bytes}
  TrackedFrame (tracking stage -> keys.tracks_channel and keys.tracks_history):
    {"v": 1, "stream", "seq", "t_capture", "t_done", "t_tracked", "model", "w", "h",
     "boxes": [[x1, y1, x2, y2, conf, cls, track, [zone, ...]], ...]}
  Snapshot (worker -> keys.snapshot): {"w": int, "h": int, "jpeg": bytes, "boxes": [[6 numbers], ...]}
  Event (tracking stage -> the event log and keys.events_channel): a JSON object with at least
    "stream" and "type" (JSON, not msgpack: sinks hand it on as it is).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack
import numpy as np

from . import keys
from .errors import ConfigError, RecordError, SchemaError

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
    #: Frames motion gating held back just before this one (the tracker ages its tracks by them).
    gated: int = 0


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
    #: Frames motion gating held back just before this one.
    gated: int = 0

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
            **({"gated": self.gated} if self.gated else {}),
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


def decode_names(data: object) -> list[str]:
    """A model's class names as a worker stores them (`keys.model_names`): a msgpack list of strings;
    anything else is a SchemaError (readers print class numbers instead)."""
    names = unpackb(data)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SchemaError(f"class names are not a list of strings: {type(names).__name__}")
    return names


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
                    **({"gated": f.gated} if f.gated else {}),
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
                gated=_gated(fr, where),
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
        gated=_gated(obj, "result"),
    )


#: A frame says at most this many frames were gated before it (a day at 30 fps is far less).
MAX_GATED = 1 << 31


def _gated(obj: dict[str, Any], where: str) -> int:
    """The optional `gated` count: a whole number 0..MAX_GATED."""
    if "gated" not in obj:
        return 0
    value: int = _get(obj, "gated", int, where)
    if not 0 <= value <= MAX_GATED:
        raise SchemaError(f"{where}: gated={value} is outside 0..{MAX_GATED}")
    return value


# -- the other roles' records ---------------------------------------------------------------------

#: The largest sequence number any reader accepts (a signed 64-bit int, as Redis counters are).
SEQ_MAX = 2**63 - 1
#: A preview's width or height as the producer states it.
MAX_PREVIEW_SIDE = 1 << 16
#: A zone or line name in a tracked box (common/analytics_settings.py allows far less).
MAX_ZONE_NAME = 256
#: An event is a small JSON object; anything longer was not written by the tracking stage.
MAX_EVENT_BYTES = 64 * 1024


def _map(data: object, what: str) -> dict[str, Any]:
    try:
        obj = unpackb(data)
    except SchemaError as exc:
        raise RecordError("malformed", f"{what}: {exc}") from exc
    if not isinstance(obj, dict):
        raise RecordError("malformed", f"{what}: not a map")
    return obj


def record_seq(value: object) -> int:
    """A frame's sequence number: a whole number in 0..SEQ_MAX (never a bool, a float or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEQ_MAX:
        raise RecordError("bad seq", repr(value)[:40])
    return value


def record_number(value: object) -> float:
    """A finite number (never a bool, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError("bad number", repr(value)[:40])
    return float(value)


def _dim(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_PREVIEW_SIDE:
        raise RecordError("bad size", repr(value)[:40])
    return value


def _jpeg(value: object) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise RecordError("no jpeg")
    return value


@dataclass(frozen=True)
class Preview:
    """The producer's small JPEG of a frame, for the live view (w, h: the camera frame's size)."""

    seq: int
    jpeg: bytes
    w: int | None = None
    h: int | None = None
    t: float | None = None  # the frame's capture time


def encode_preview(p: Preview) -> bytes:
    return packb({"seq": p.seq, "w": p.w, "h": p.h, "t": p.t, "jpeg": p.jpeg})


def decode_preview(data: object) -> Preview:
    obj = _map(data, "preview")
    t = obj.get("t")
    return Preview(
        seq=record_seq(obj.get("seq")),
        jpeg=_jpeg(obj.get("jpeg")),
        w=_dim(obj.get("w")),
        h=_dim(obj.get("h")),
        t=None if t is None else record_number(t),
    )


class TrackedBox(NamedTuple):
    """One box of a tracked frame; packed as the array [x1, y1, x2, y2, conf, cls, track, [zone, ...]]."""

    x1: float
    y1: float
    x2: float
    y2: float
    conf: float
    cls: int
    track: int
    zones: list[str]


def _tracked_box(raw: object, where: str) -> TrackedBox:
    if not isinstance(raw, list | tuple) or len(raw) != 8:
        raise RecordError("malformed", f"{where}: expected [x1, y1, x2, y2, conf, cls, track, zones]")
    x1, y1, x2, y2, conf = (record_number(v) for v in raw[:5])
    if max(abs(x1), abs(y1), abs(x2), abs(y2)) > MAX_BOX_COORD:
        raise RecordError("bad number", f"{where}: a coordinate is beyond +-{MAX_BOX_COORD}")
    cls, track, zones = raw[5], raw[6], raw[7]
    if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < MAX_CLASS_ID:
        raise RecordError("bad number", f"{where}: class {cls!r:.40} is not in 0..{MAX_CLASS_ID - 1}")
    track = record_seq(track)
    if not isinstance(zones, list) or len(zones) > MAX_MAP:
        raise RecordError("malformed", f"{where}: zones are not a list of names")
    if not all(isinstance(z, str) and len(z) <= MAX_ZONE_NAME for z in zones):
        raise RecordError("malformed", f"{where}: a zone name is not a short string")
    return TrackedBox(x1, y1, x2, y2, conf, cls, track, zones)


@dataclass(frozen=True)
class TrackedFrame:
    """A result after the tracking stage: its boxes with track ids and the zones each box is in."""

    stream: str
    seq: int
    t_capture: float
    t_done: float
    t_tracked: float
    model: str | None
    w: int
    h: int
    boxes: list[TrackedBox] = field(default_factory=list)

    def to_map(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "stream": self.stream,
            "seq": self.seq,
            "t_capture": self.t_capture,
            "t_done": self.t_done,
            "t_tracked": self.t_tracked,
            "model": self.model,
            "w": self.w,
            "h": self.h,
            "boxes": [list(b) for b in self.boxes],
        }


def encode_tracked(frame: TrackedFrame) -> bytes:
    return packb(frame.to_map())


def decode_tracked(data: object) -> TrackedFrame:
    obj = _map(data, "tracked frame")
    if obj.get("v") != VERSION:
        raise RecordError("malformed", f"tracked frame: unsupported version {obj.get('v')!r:.40}")
    stream, model, boxes = obj.get("stream"), obj.get("model"), obj.get("boxes")
    if not isinstance(stream, str) or not keys.STREAM_ID_RE.match(stream):
        raise RecordError("malformed", "tracked frame: no stream id")
    if model is not None and not isinstance(model, str):
        raise RecordError("malformed", "tracked frame: model is not a name")
    if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
        raise RecordError("malformed", "tracked frame: boxes are not a list")
    w, h = _dim(obj.get("w")), _dim(obj.get("h"))
    return TrackedFrame(
        stream=stream,
        seq=record_seq(obj.get("seq")),
        t_capture=record_number(obj.get("t_capture")),
        t_done=record_number(obj.get("t_done")),
        t_tracked=record_number(obj.get("t_tracked")),
        model=model,
        w=w or 1,
        h=h or 1,
        boxes=[_tracked_box(b, f"tracked box {i}") for i, b in enumerate(boxes)],
    )


@dataclass(frozen=True)
class Snapshot:
    """A frame's JPEG kept for its events, with the camera frame's size and the frame's boxes."""

    w: int | None
    h: int | None
    jpeg: bytes
    boxes: list[list[float | int]] = field(default_factory=list)


def encode_snapshot(snap: Snapshot) -> bytes:
    return packb({"w": snap.w, "h": snap.h, "jpeg": snap.jpeg, "boxes": snap.boxes})


def decode_snapshot(data: object) -> Snapshot:
    """A snapshot; only its JPEG is required: a frame size that is not 1..MAX_SIDE reads as None (boxes
    drawn unscaled), and a box that is not six sound numbers is left out."""
    obj = _map(data, "snapshot")
    w, h, boxes = obj.get("w"), obj.get("h"), obj.get("boxes")
    sizes = [v if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE else None for v in (w, h)]
    kept = []
    for i, raw in enumerate(boxes[:MAX_BOXES] if isinstance(boxes, list) else []):
        try:
            kept.append(_box(raw, f"snapshot box {i}"))
        except SchemaError:
            continue
    return Snapshot(w=sizes[0], h=sizes[1], jpeg=_jpeg(obj.get("jpeg")), boxes=kept)


def encode_event(event: dict[str, Any]) -> str:
    """An event as the compact JSON the event log, its channel and the sinks carry."""
    return json.dumps(event, separators=(",", ":"))


def _no_constant(name: str) -> Any:
    raise RecordError("malformed", f"event: {name} is not a JSON number")


def decode_event(raw: object) -> dict[str, Any]:
    """An event from its JSON; RecordError when it is not one (not JSON, NaN, too deep, too big, no
    stream or type): its reader skips and counts it."""
    if not isinstance(raw, bytes | str):
        raise RecordError("malformed", "event: no JSON")
    if len(raw) > MAX_EVENT_BYTES:
        raise RecordError("malformed", f"event: {len(raw)} bytes, over {MAX_EVENT_BYTES}")
    try:
        event = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError("malformed", f"event: not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise RecordError("malformed", f"event: expected an object, got {type(event).__name__}")
    if not isinstance(event.get("stream"), str) or not isinstance(event.get("type"), str):
        raise RecordError("malformed", "event: no stream or type")
    return event
