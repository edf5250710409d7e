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
    page.wait_for_function("() => window.__rtai.phase === 'live' && window.__rtai.fleet !== null", timeout=30_000)
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
    page.wait_for_function("() => document.querySelectorAll('#sp-events li .snap').length === 6", timeout=15_000)
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


#: The API's Content-Security-Policy (control/api/guards.py on the API branch), with styles from 'self' only:
#: the page must run under it with no violation.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: Polled with evaluate (CDP): wait_for_function evaluates a string, which the CSP refuses.
LIVE_JS = "() => window.__rtai.phase === 'live' && window.__rtai.fleet !== null"
WATCH_CSP_JS = """window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"""


@pytest.mark.timeout(90)
def test_the_pages_run_under_a_strict_content_security_policy(r, procs, page):
    import numpy as np  # noqa: PLC0415

    from common.images import encode_frame  # noqa: PLC0415
    from common.wire import Result, encode_result, packb  # noqa: PLC0415

    r.sadd(keys.STREAMS, "cam")
    r.hset(keys.stream("cam"), mapping={"state": "running", "model": "m", "fps_in": "5"})
    base = _api(procs)

    def with_csp(route) -> None:  # the document's policy governs the page (and the live feed is endless)
        if route.request.resource_type != "document":
            route.continue_()
            return
        resp = route.fetch()
        route.fulfill(response=resp, headers={**resp.headers, "content-security-policy": CSP})

    page.route("**/*", with_csp)
    page.add_init_script(WATCH_CSP_JS)
    jpeg = encode_frame(np.full((240, 320, 3), 90, np.uint8), seq=0, t_capture=0.0, imgsz=320).data
    for path in ("/", "/stream/cam"):
        page.goto(base + path)
        wait_for(lambda: page.evaluate(LIVE_JS), timeout=30, what=f"{path} live")

        def drawn() -> bool:
            seq = int(page.evaluate("Date.now()"))
            r.publish(keys.preview_channel("cam"), packb({"seq": seq, "w": 320, "h": 240, "t": 1.0, "jpeg": jpeg}))
            box = [10.0, 20.0, 50.0, 80.0, 0.9, 0]
            result = Result(stream="cam", seq=seq, batch=0, t_capture=1.0, t_enqueue=1.0, t_start=1.1, t_done=1.2,
                            worker="w", gpu="cpu", model="m", w=320, h=240, boxes=[box])  # fmt: skip
            r.publish(keys.results_channel("cam"), encode_result(result))
            return bool(page.evaluate("window.__rtai.framesDrawn > 0"))

        wait_for(drawn, timeout=20, interval=0.3, what=f"a frame drawn on {path} under the CSP")
        assert page.evaluate("window.__csp") == [], path
