"""The typed pub/sub records (common/wire.py): previews, tracked frames, snapshots, events. Each
encodes to the bytes its role wrote before it was typed, and each decoder refuses what it cannot
use with the reason its reader counts."""

from __future__ import annotations

import json

import pytest

from common.errors import RecordError
from common.wire import (
    MAX_EVENT_BYTES,
    Preview,
    Snapshot,
    TrackedBox,
    TrackedFrame,
    decode_event,
    decode_preview,
    decode_snapshot,
    decode_tracked,
    encode_event,
    encode_preview,
    encode_snapshot,
    encode_tracked,
    packb,
)

JPEG = b"\xff\xd8\xff\xe0 a jpeg"


def tracked_map(**over: object) -> dict:
    frame = {
        "v": 1,
        "stream": "door",
        "seq": 12,
        "t_capture": 100.0,
        "t_done": 100.05,
        "t_tracked": 100.06,
        "model": "rtai-shapes",
        "w": 640,
        "h": 480,
        "boxes": [[1.5, 2.0, 30.0, 40.0, 0.91, 2, 7, ["entrance"]], [5.0, 5.0, 9.0, 9.0, 0.5, 0, 8, []]],
    }
    return {**frame, **over}


def test_each_record_encodes_to_the_bytes_its_role_wrote_untyped():
    preview = Preview(seq=3, jpeg=JPEG, w=640, h=480, t=99.5)
    assert encode_preview(preview) == packb({"seq": 3, "w": 640, "h": 480, "t": 99.5, "jpeg": JPEG})
    assert decode_preview(encode_preview(preview)) == preview

    raw = tracked_map()
    frame = decode_tracked(packb(raw))
    assert encode_tracked(frame) == packb(raw)
    assert frame.boxes[0] == TrackedBox(1.5, 2.0, 30.0, 40.0, 0.91, 2, 7, ["entrance"])
    assert (frame.boxes[0].track, frame.boxes[0].zones, frame.boxes[1].cls) == (7, ["entrance"], 0)

    snap = Snapshot(w=640, h=480, jpeg=JPEG, boxes=[[1.0, 2.0, 3.0, 4.0, 0.9, 1]])
    assert encode_snapshot(snap) == packb({"w": 640, "h": 480, "jpeg": JPEG, "boxes": [[1.0, 2.0, 3.0, 4.0, 0.9, 1]]})
    assert decode_snapshot(encode_snapshot(snap)) == snap

    event = {"stream": "door", "type": "entered", "track": 7}
    assert encode_event(event) == json.dumps(event, separators=(",", ":"))
    assert decode_event(encode_event(event)) == event


def test_a_tracked_frame_built_from_records_packs_its_boxes_as_arrays():
    frame = TrackedFrame("door", 1, 1.0, 1.1, 1.2, None, 64, 48, [TrackedBox(0, 0, 1, 1, 0.5, 0, 1, [])])
    assert decode_tracked(encode_tracked(frame)).boxes == frame.boxes


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seq": float("inf")}, "bad seq"),
        ({"seq": -1}, "bad seq"),
        ({"seq": True}, "bad seq"),
        ({"seq": 2**63}, "bad seq"),
        ({"t_tracked": float("nan")}, "bad number"),
        ({"boxes": [[1, 2, 3, 4, 0.9, 3.4e38, 1, []]]}, "bad number"),  # once an OverflowError in a reader
        ({"boxes": [[1, 2, 3, 4, 0.9, 2**40, 1, []]]}, "bad number"),
        ({"boxes": [[float("inf"), 2, 3, 4, 0.9, 0, 1, []]]}, "bad number"),
        ({"boxes": [[1e300, 2, 3, 4, 0.9, 0, 1, []]]}, "bad number"),
        ({"boxes": [[1, 2, 3, 4, 0.9, 0, float("inf"), []]]}, "bad seq"),
        ({"boxes": [[1, 2, 3, 4, 0.9, 0, 1, "entrance"]]}, "malformed"),
        ({"boxes": [[1, 2, 3, 4, 0.9, 0, 1, [7]]]}, "malformed"),
        ({"boxes": [[1, 2, 3, 4, 0.9, 0, 1]]}, "malformed"),  # a result's box, not a tracked one
        ({"boxes": "nope"}, "malformed"),
        ({"v": 2}, "malformed"),
        ({"stream": "../x"}, "malformed"),
        ({"w": 0}, "bad size"),
    ],
)
def test_a_tracked_frame_that_is_not_one_is_refused_with_its_reason(change, reason):
    with pytest.raises(RecordError) as err:
        decode_tracked(packb(tracked_map(**change)))
    assert err.value.reason == reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"seq": float("inf"), "jpeg": JPEG}, "bad seq"),
        ({"seq": 1, "jpeg": b""}, "no jpeg"),
        ({"seq": 1}, "no jpeg"),
        ({"seq": 1, "jpeg": JPEG, "w": 1 << 20}, "bad size"),
        ({"seq": 1, "jpeg": JPEG, "t": float("inf")}, "bad number"),
        ([1, 2], "malformed"),
    ],
)
def test_a_preview_that_is_not_one_is_refused_with_its_reason(raw, reason):
    with pytest.raises(RecordError) as err:
        decode_preview(packb(raw))
    assert err.value.reason == reason
    with pytest.raises(RecordError, match="malformed"):
        decode_preview(b"\xc1 not msgpack")


def test_a_snapshot_needs_only_its_jpeg_and_keeps_its_sound_boxes():
    boxes = [[1, 2, 30, 40, 0.9, 0], [float("inf"), 0, 1, 1, 0.9, 0], ["a", 1, 2, 3, 0.9, 0], [1, 2], None]
    snap = decode_snapshot(packb({"w": 0, "h": 480, "jpeg": JPEG, "boxes": boxes}))
    assert (snap.w, snap.h, snap.boxes) == (None, 480, [[1, 2, 30, 40, 0.9, 0]])
    assert decode_snapshot(packb({"jpeg": JPEG, "boxes": "nope"})).boxes == []
    with pytest.raises(RecordError, match="no jpeg"):
        decode_snapshot(packb({"w": 1, "h": 1, "boxes": []}))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stream": "door", "type": "entered", "x": NaN}',
        b'{"stream": "door"}',
        b"[1, 2]",
        b"\xff\xfe",
        ("[" * 100_000).encode(),
        b'{"stream": "door", "type": "x", "pad": "' + b"a" * MAX_EVENT_BYTES + b'"}',
        b"not json",
    ],
)
def test_an_event_that_is_not_one_is_refused(raw):
    with pytest.raises(RecordError) as err:
        decode_event(raw)
    assert err.value.reason == "malformed"
