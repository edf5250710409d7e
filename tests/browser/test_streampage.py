"""The stream page in a real browser: forged snapshot references are never fetched; the sparklines say
which line is which."""

from __future__ import annotations

import json
import os

import pytest

from common import keys

from ..helpers import wait_for
from .test_liveview import _api

pytestmark = [pytest.mark.browser, pytest.mark.slow]
#: RTAI_SCREENSHOT_DIR=/some/dir keeps the stream page's screenshot there.
SCREENSHOT_DIR = os.environ.get("RTAI_SCREENSHOT_DIR")


@pytest.mark.timeout(90)
def test_a_forged_snapshot_reference_is_not_fetched_and_the_sparklines_have_a_legend(r, procs, page):
    r.sadd(keys.STREAMS, "cam")
    r.hset(keys.stream("cam"), mapping={"state": "running", "model": "yolo11n", "fps_in": "5"})
    base = _api(procs)
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    page.goto(base + "/stream/cam")
    page.wait_for_function("window.__rtai.phase === 'live' && window.__rtai.fleet !== null", timeout=30_000)
    forged = ["../../../docs", "cam/../../docs", "cam/5?x=1", "../openapi.json/1", "cam/1e3"]
    for i, ref in enumerate([*forged, "cam/5"]):
        event = {
            "id": f"e{i}",
            "type": "enter",
            "stream": "cam",
            "zone": "door",
            "track": i,
            "t": 100.0 + i,
            "snapshot": ref,
        }
        r.publish(keys.events_channel("cam"), json.dumps(event))
    page.wait_for_function("document.querySelectorAll('#sp-events li .snap').length === 6", timeout=15_000)
    wait_for(lambda: any("/snapshot/cam/5" in u for u in requested), timeout=10, what="the good snapshot fetched")
    assert [u for u in requested if "/snapshot/" in u and "/snapshot/cam/5?" not in u] == []
    assert not any(u.endswith(("/docs", "/openapi.json")) or "/api/docs" in u for u in requested)
    invalid = page.locator("#sp-events .snap", has_text="snapshot reference invalid")
    assert invalid.count() == len(forged)

    for canvas, names in (
        ("sp-fps", ["fps in (source)", "fps out (results)"]),
        ("sp-lat", ["latency p50", "latency p99"]),
    ):
        legend = page.locator(f"#{canvas}-legend li")
        legend.first.wait_for(timeout=10_000)
        assert legend.all_text_contents() == names
    if SCREENSHOT_DIR:
        page.screenshot(path=os.path.join(SCREENSHOT_DIR, "streampage.png"), full_page=True)
