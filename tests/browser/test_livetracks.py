"""The live view of a tracked stream in a real browser: track ids in the box labels (the tracking
stage's, for the frame drawn), the stream's zone outlined, its events counted on the tile and listed
with their snapshots on the stream page."""

from __future__ import annotations

import pytest

from common import desired, keys
from common.config import ProducerSettings
from common.wire import unpackb

from .test_liveview import _api

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ZONE = [[0.05, 0.05], [0.6, 0.05], [0.6, 0.95], [0.05, 0.95]]
#: Frames the worker must find boxes in and the tracker track before a drawn frame carries ids.
TRACKED_DRAWN = """() => {
  const d = window.__rtai.lastDrawn.demo;
  return d && d.tracks && d.tracks.length ? d : null;
}"""


def _tracked(r, stream: str, seq: int) -> dict | None:
    for _id, fields in r.xrevrange(keys.tracks_history(stream), count=1000):
        frame = unpackb(fields[b"t"])
        if frame["seq"] == seq:
            return frame
    return None


@pytest.mark.timeout(90)
def test_a_tracked_stream_shows_track_ids_its_zone_and_its_events(r, procs, page):
    analytics = {"track": {}, "zones": [{"name": "door", "points": ZONE}], "snapshots": True}
    settings = ProducerSettings(
        stream="demo", source="demo", loop=True, max_fps=8, batch_size=2, imgsz=320, analytics=analytics
    )
    desired.put(r, settings)
    procs.rtai("worker", "--threads", "1", log="worker.log")
    procs.rtai("producer", log="daemon.log")
    procs.rtai("tracker", log="tracker.log")
    base = _api(procs)

    page.goto(base + "/")
    page.wait_for_selector('.tile[data-stream="demo"]', timeout=30_000)
    drawn = page.wait_for_function(TRACKED_DRAWN, timeout=45_000).json_value()
    # The boxes drawn are the tracked frame's for that seq, each label carrying its track id.
    tracked = _tracked(r, "demo", drawn["seq"])
    assert tracked is not None, f"no tracked frame published for seq {drawn['seq']}"
    scale = drawn["canvas"][0] / tracked["w"]
    assert drawn["tracks"] == [box[6] for box in tracked["boxes"]]
    for got, box in zip(drawn["drawn"], tracked["boxes"], strict=True):
        assert got == pytest.approx([v * scale for v in box[:4]], abs=0.2)
    for label, track in zip(drawn["labels"], drawn["tracks"], strict=True):
        assert label.endswith(f" #{track}")
    # The zone is outlined where the stream's settings put it.
    [(name, points)] = drawn["zones"]
    cw, ch = drawn["canvas"]
    assert name == "door"
    for got, (x, y) in zip(points, ZONE, strict=True):
        assert got == pytest.approx([x * cw, y * ch], abs=0.2)
    assert page.get_attribute('.tile[data-stream="demo"] canvas', "data-zones") == "door"
    # Events: counted on the tile; listed on the stream page with a snapshot of their frame.
    page.wait_for_selector('.tile[data-stream="demo"] .evcount:not([hidden])', timeout=5_000)
    page.wait_for_function(
        "() => +document.querySelector('.tile[data-stream=\"demo\"] .evcount').dataset.count > 0", timeout=10_000
    )
    page.goto(base + "/stream/demo")
    page.wait_for_selector("#sp-events li[data-event]", timeout=10_000)
    img = page.wait_for_selector("#sp-events a.snap[data-snapshot] img", timeout=10_000)
    assert img.evaluate("(im) => im.complete && im.naturalWidth > 0")
    ref = page.get_attribute("#sp-events a.snap[data-snapshot]", "data-snapshot")
    stream, seq = ref.split("/")
    assert stream == "demo" and r.exists(keys.snapshot("demo", int(seq)))
