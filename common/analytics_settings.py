"""A stream's analytics settings: which classes, zones, lines, dwell rule, tracker, snapshots and motion gating.

Carried inside ProducerSettings (`analytics`), so the same record travels through `rtai stream add`,
`cameras.yml`, the REST body (`analytics_settings`) and the desired state the tracking stage reads.
Coordinates are normalized to the frame (0..1, origin top-left).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

#: Zone and line names go into MQTT topics and Redis hash fields: a safe alphabet.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
#: A snapshot outlives the events that refer to it long enough for a person to look.
DEFAULT_SNAPSHOT_TTL_S = 3600
#: Snapshots kept per stream at once: an hour of a busy door's events at 320x240 (~15 KB each) fits.
DEFAULT_SNAPSHOT_MAX_COUNT = 1000
#: Bytes of snapshots kept per stream at once: a few hundred 1080p frames; the cap that binds at high resolution.
DEFAULT_SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024
#: Event types (as in events' `type`).
EventType = Literal["appeared", "lost", "entered", "left", "crossed", "dwell"]
#: A frame still missing after this wait is skipped for tracking (and counted).
DEFAULT_REORDER_WAIT_S = 1.0

#: A normalized coordinate: the schema states the bound, `_unit` checks it with a clear message.
Coord = Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
Point = tuple[Coord, Coord]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unit(points: list[Point]) -> list[Point]:
    for x, y in points:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"point ({x}, {y}) is outside 0..1 (coordinates are normalized)")
    return points


class Zone(_Closed):
    name: str = Field(pattern=NAME_PATTERN)
    points: list[Point] = Field(min_length=3, max_length=64)

    _check = field_validator("points")(classmethod(lambda cls, v: _unit(v)))


class Line(_Closed):
    """A directed segment a -> b; crossing it from its left to its right is `direction: "in"`."""

    name: str = Field(pattern=NAME_PATTERN)
    points: list[Point] = Field(min_length=2, max_length=2)

    _check = field_validator("points")(classmethod(lambda cls, v: _unit(v)))


class TrackSettings(_Closed):
    """The tracker and its parameters (names as in Ultralytics' bytetrack.yaml / botsort.yaml).

    `bytetrack` is ours (analytics/bytetrack.py: Ultralytics' BYTETracker on arrays, several times faster);
    `ultralytics-bytetrack` and `botsort` are Ultralytics' own."""

    tracker_type: Literal["bytetrack", "ultralytics-bytetrack", "botsort"] = "bytetrack"
    track_high_thresh: float = Field(0.25, ge=0, le=1)
    track_low_thresh: float = Field(0.1, ge=0, le=1)
    new_track_thresh: float = Field(0.25, ge=0, le=1)
    track_buffer: int = Field(30, ge=1, le=10_000)
    match_thresh: float = Field(0.8, ge=0, le=1)
    fuse_score: bool = True
    reorder_wait_s: float = Field(DEFAULT_REORDER_WAIT_S, ge=0, le=60)


class MotionSettings(_Closed):
    """Motion gating (producer/motion.py): a sampled frame goes to inference only when it differs from
    the last frame sent, when the newest result still has objects, or every `keepalive_s`.

    The comparison runs on a grey copy 160 pixels wide, blurred: a pixel has changed when its grey
    level moved by more than `pixel_delta` (0-255); the frame has motion when at least `min_area` of
    its pixels changed. Pixels inside a `mask` rectangle (x1, y1, x2, y2, normalized: a clock overlay,
    a tree in the wind) never count."""

    pixel_delta: int = Field(25, ge=1, le=255)
    min_area: float = Field(0.003, gt=0, le=1)
    keepalive_s: float = Field(5.0, ge=0.1, le=3600)
    mask: list[tuple[Coord, Coord, Coord, Coord]] = Field(default_factory=list, max_length=64)

    @field_validator("mask")
    @classmethod
    def _rectangles(cls, value: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
        for x1, y1, x2, y2 in value:
            _unit([(x1, y1), (x2, y2)])
            if not (x1 < x2 and y1 < y2):
                raise ValueError(f"mask rectangle ({x1}, {y1}, {x2}, {y2}) needs x1 < x2 and y1 < y2")
        return value


class AnalyticsSettings(_Closed):
    #: Class names the model keeps (None: all); filtered classes are dropped inside the model's NMS.
    classes: list[str] | None = Field(None, max_length=256)
    zones: list[Zone] = Field(default_factory=list, max_length=64)
    lines: list[Line] = Field(default_factory=list, max_length=64)
    #: A `dwell` event when a track stays in a zone this long (None: no dwell events).
    dwell_s: float | None = Field(None, gt=0)
    #: Tracking on (None: off; zones, lines and dwell need it).
    track: TrackSettings | None = None
    snapshots: bool = False
    snapshot_ttl_s: int = Field(DEFAULT_SNAPSHOT_TTL_S, ge=1, le=7 * 86400)
    #: Snapshots kept at once (count and bytes); an event over the cap has no snapshot (counted, refused).
    snapshot_max_count: int = Field(DEFAULT_SNAPSHOT_MAX_COUNT, ge=1, le=1_000_000)
    snapshot_max_bytes: int = Field(DEFAULT_SNAPSHOT_MAX_BYTES, ge=1024, le=64 * 1024**3)
    #: Keep a snapshot only for frames with one of these event types (None: any event).
    snapshot_events: list[EventType] | None = Field(None, max_length=6)
    #: Motion gating (None: off): static frames are held back from inference, counted skipped_static.
    motion: MotionSettings | None = None

    @field_validator("classes")
    @classmethod
    def _class_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
            raise ValueError("class names are 1-64 characters")
        return value

    @model_validator(mode="after")
    def _names_unique(self) -> AnalyticsSettings:
        names = [z.name for z in self.zones] + [ln.name for ln in self.lines]
        if len(set(names)) != len(names):
            raise ValueError(f"zone and line names must be unique: {names}")
        return self


_POINT_RE = re.compile(r"^\s*([0-9.]+)\s*,\s*([0-9.]+)\s*$")


def parse_shape(text: str) -> tuple[str, list[Point]]:
    """`name=x,y:x,y:...` (the CLI's --zone / --line) -> (name, points); ValueError says why."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ValueError(f"{text!r}: expected name=x,y:x,y:...")
    points = []
    for part in rest.split(":"):
        m = _POINT_RE.match(part)
        if not m:
            raise ValueError(f"{text!r}: {part!r} is not x,y")
        points.append((float(m.group(1)), float(m.group(2))))
    return name.strip(), points


def motion_map(motion: bool, masks: tuple[str, ...]) -> dict[str, object] | None:
    """The CLI's --motion and --motion-mask x1,y1,x2,y2 (repeatable) -> a `motion` map (None: gating off);
    ValueError says which mask is not four numbers."""
    if not (motion or masks):
        return None
    rects = []
    for text in masks:
        try:
            rect = [float(v) for v in text.split(",")]
        except ValueError:
            rect = []
        if len(rect) != 4:
            raise ValueError(f"{text!r}: expected x1,y1,x2,y2 (normalized 0..1)")
        rects.append(rect)
    return {"mask": rects}
