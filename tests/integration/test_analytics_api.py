"""GET /events and /snapshot against a hostile event log and forged snapshots: bad entries are skipped and
counted, a quiet stream's events are found behind a busy one's, a decompression bomb is never decoded."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from analytics.eventlog import SCAN_MAX, append_event
from common import keys
from common.wire import packb

API = "/api/v1/realtime-ai"


@pytest.fixture
def api(r, redis_server):
    from control.api.app import create_app  # noqa: PLC0415

    return TestClient(create_app(redis_server))


def event(stream: str, i: int, kind: str = "entered") -> dict:
    return {"id": f"{stream}:{i}:0", "type": kind, "stream": stream, "seq": i, "track": i, "t": 1.0,
            "class": "person", "zone": "entrance", "count": 1, "snapshot": None}  # fmt: skip


def test_events_skips_and_counts_entries_that_are_not_events(api, r):
    append_event(r, event("door", 1))
    for raw in (b"not json", b"[1, 2]", b'{"stream": "door", "type": "entered", "x": NaN}', b"[" * 100_000, b"\xff"):
        r.xadd(keys.EVENT_LOG, {"e": raw})
    r.xadd(keys.EVENT_LOG, {"other": b"field"})
    append_event(r, event("door", 2))
    got = api.get(f"{API}/events")
    assert got.status_code == 200
    assert [e["id"] for e in got.json()] == ["door:2:0", "door:1:0"]
    assert got.headers["X-RTAI-Skipped"] == "6"


def test_a_quiet_streams_events_are_found_behind_a_busy_streams(api, r):
    append_event(r, event("quiet", 1))
    with r.pipeline(transaction=False) as pipe:
        for i in range(SCAN_MAX + 50):
            append_event(pipe, event("busy", i))
        pipe.execute()
    got = api.get(f"{API}/events", params={"stream": "quiet"})
    assert [e["id"] for e in got.json()] == ["quiet:1:0"]
    # A filter the scan cannot satisfy says that it stopped at its depth.
    stopped = api.get(f"{API}/events", params={"type": "dwell"})
    assert stopped.json() == [] and stopped.headers["X-RTAI-Scan-Stopped"] == "1"


def jpeg(w: int = 64, h: int = 48) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def forged_size(data: bytes, w: int, h: int) -> bytes:
    """The JPEG with its start-of-frame header claiming w x h (the data stays that of a small image)."""
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9 :]


def test_a_snapshot_claiming_a_huge_image_is_refused_undecoded(api, r):
    r.set(keys.snapshot("door", 1), packb({"w": 640, "h": 480, "jpeg": forged_size(jpeg(), 5000, 5000), "boxes": []}))
    t0 = time.monotonic()
    got = api.get(f"{API}/snapshot/door/1", params={"boxes": 1})
    assert got.status_code == 500 and "5000x5000" in got.json()["detail"]
    assert time.monotonic() - t0 < 2
    r.set(keys.snapshot("door", 2), packb({"w": 640, "h": 480, "jpeg": b"\xff\xd8garbage", "boxes": []}))
    assert api.get(f"{API}/snapshot/door/2", params={"boxes": 1}).status_code == 500
    r.set(keys.snapshot("door", 3), b"\xc1 not msgpack")
    assert api.get(f"{API}/snapshot/door/3").status_code == 500


def test_bad_boxes_and_frame_sizes_are_skipped_or_clamped(api, r):
    inf, nan = float("inf"), float("nan")
    boxes = [[1, 2, 30, 40, 0.9, 0], [inf, 0, 10, 10, 0.9, 0], [nan, 1, 2, 3, 0.5, 1], [-1e300, 0, 1e300, 10, 0.9, 0],
             ["a", 1, 2, 3, 0.9, 0], [1, 2], None, [5, 5, 5, 5, 0.9, 0]]  # fmt: skip
    for seq, (w, h) in enumerate([(0, 480), (640, 0), (-5, 3), (640, 480)]):
        r.set(keys.snapshot("door", seq), packb({"w": w, "h": h, "jpeg": jpeg(), "boxes": boxes}))
        got = api.get(f"{API}/snapshot/door/{seq}", params={"boxes": 1})
        assert got.status_code == 200, got.text
        assert cv2.imdecode(np.frombuffer(got.content, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    r.set(keys.snapshot("door", 9), packb({"w": 640, "h": 480, "jpeg": jpeg(), "boxes": "nope"}))
    assert api.get(f"{API}/snapshot/door/9", params={"boxes": 1}).status_code == 200
    assert json.loads(api.get(f"{API}/snapshot/door/99").text)["detail"].startswith("no snapshot")
