"""The live view in a real browser, on a running fleet: tiles, boxes matched to results, control, token."""

from __future__ import annotations

import httpx
import pytest

from common import keys
from common.wire import decode_result

from ..helpers import free_port, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.rtsp, pytest.mark.slow]
P = "/api/v1/realtime-ai"
#: The span (ms) of the first 15 pictures drawn within 3 s after `since` (null until there are).
FIFTEEN_IN_3_S = """(since) => {
  const t = window.__rtai.drawnAt.filter((x) => x >= since);
  for (let i = 15; i < t.length; i++) if (t[i] - t[i - 15] <= 3000) return t[i] - t[i - 15];
  return null;
}"""


def _api(procs, *extra: str, env: dict[str, str] | None = None) -> str:
    port = free_port()
    procs.rtai("api", "--port", str(port), *extra, env=env, log=f"api{port}.log")
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/static/app.js", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, what="rtai api serving")
    return base


def _result(r, stream: str, seq: int) -> dict | None:
    for _id, fields in r.xrevrange(keys.history(stream), count=500):
        res = decode_result(fields[b"r"]).to_map()
        if res["seq"] == seq:
            return res
    return None


def _tile_state(page, stream: str) -> str | None:
    return page.get_attribute(f'.tile[data-stream="{stream}"]', "data-state", timeout=500)


@pytest.mark.timeout(150)
def test_overview_draws_published_boxes_and_controls_streams(r, procs, rtsp_clip, page, tmp_path):
    procs.rtai("worker", "--threads", "1", log="worker.log")
    # One CPU worker serves both: the RTSP stream at a lower rate so the demo's results keep up.
    common = ("--batch-size", "2", "--imgsz", "320")
    procs.rtai("producer", "--source", "demo", "--stream", "demo", "--loop", "--max-fps", "8", *common, log="demo.log")
    rtsp = procs.rtai("producer", "--source", rtsp_clip, "--stream", "rtsp", "--max-fps", "3", *common, log="rtsp.log")
    procs.rtai("producer", log="daemon.log")  # runs the camera added through the form
    base = _api(procs)

    page.goto(base + "/")
    # A stream page open from the start: the producer sends its faster previews, whose results come
    # back after the fleet's latency (seconds on a loaded 2-core machine).
    stream_page = page.context.new_page()
    stream_page.goto(base + "/stream/demo")
    page.wait_for_selector('.tile[data-stream="demo"]', timeout=30_000)
    page.wait_for_selector('.tile[data-stream="rtsp"]', timeout=30_000)
    # Boxes: once the model is loaded, a drawn box must be a published result's box for that seq.
    wait_for(lambda: r.xlen(keys.history("demo")) > 0, timeout=60, what="the worker publishing")
    t0 = page.evaluate("performance.now()")
    drawn = page.wait_for_function(
        "() => { const d = window.__rtai.lastDrawn.demo; return d && d.drawn.length ? d : null; }", timeout=10_000
    ).json_value()
    assert page.evaluate("performance.now()") - t0 < 10_000
    result = _result(r, "demo", drawn["seq"])
    assert result is not None, f"no published result for seq {drawn['seq']}"
    cw, _ch = drawn["canvas"]
    scale = cw / result["w"]
    expected = [[round(v * scale, 1) for v in box[:4]] for box in result["boxes"]]
    assert len(drawn["drawn"]) == len(expected)
    for got, want in zip(drawn["drawn"], expected, strict=True):
        assert got == pytest.approx(want, abs=0.2)
    wait_for(lambda: page.evaluate("!!(window.__rtai.lastDrawn.rtsp)"), timeout=10, what="the RTSP tile drawn")
    assert page.text_content('.tile[data-stream="demo"] .state') == "running"
    page.wait_for_selector("#workers tbody tr[data-worker]", timeout=5_000)  # the next fleet event at the latest
    assert page.locator("#workers tbody tr").count() == 1
    page.wait_for_function("() => window.__rtai.fleet.streams.demo.ledger.published > 0", timeout=10_000)
    page.screenshot(path=str(tmp_path / "overview.png"))

    # A bad URL: the API's field error appears next to the URL field.
    page.click("#add-btn")
    page.fill('[name="stream_config.url"]', "/etc/passwd")
    page.select_option('[name="stream_config.protocol"]', "file")
    page.click("#add-submit")
    err = page.wait_for_selector('.err[data-loc="stream_config.url"]:not(:empty)', timeout=5_000).text_content()
    body = {"stream_config": {"url": "/etc/passwd", "protocol": "file"}}
    api_error = httpx.post(base + P + "/start", json=body).json()["detail"][0]
    assert api_error["loc"] == ["body", "stream_config", "url"] and api_error["msg"] in err

    # A good one: a new tile that goes to running; its stop button removes it.
    page.fill('[name="stream_config.stream_id"]', "added")
    page.fill('[name="stream_config.url"]', "demo")
    page.check('[name="stream_config.loop"]')
    page.click("#add-submit")
    page.wait_for_selector('.tile[data-stream="added"][data-state="running"]', timeout=30_000)
    page.click('.tile[data-stream="added"] .stop')
    page.wait_for_selector('.tile[data-stream="added"]', state="detached", timeout=15_000)
    assert page.locator('.tile[data-stream="demo"]').count() == 1

    # The stream page: a larger view updated at least 5 times a second (previews speed up while watched).
    # The 2-core test machine's one CPU worker then serves the demo alone, so its results keep up once
    # it is through what the stopped streams left queued (a second or two on a loaded machine, during
    # which the view waits for results): 15 pictures drawn within 3 s, from the page's own clock.
    rtsp.terminate()
    assert r.exists(keys.preview_watch("demo"))
    since = stream_page.evaluate("performance.now()")
    span = stream_page.wait_for_function(FIFTEEN_IN_3_S, arg=since, timeout=20_000).json_value()
    assert 15 / (span / 1000) >= 5
    assert stream_page.evaluate("window.__rtai.lastDrawn.demo.canvas[0]") == 960
    stream_page.screenshot(path=str(tmp_path / "stream.png"))


@pytest.mark.timeout(60)
def test_with_a_token_the_page_shows_nothing_until_given_it(r, procs, page):
    r.sadd(keys.STREAMS, "cam1")
    r.hset(keys.stream("cam1"), mapping={"state": "running", "model": "rtai-shapes"})
    base = _api(procs, env={"RTAI_API_TOKEN": "s3cret-token"})
    assert httpx.get(base + P + "/live", timeout=5).status_code == 401

    page.goto(base + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=10_000)
    assert page.is_hidden("#overview") and page.is_hidden("#streampage")
    assert page.locator(".tile").count() == 0
    page.fill("#token", "wrong")
    page.click("#login-form button")
    page.wait_for_function("() => document.querySelector('#login-err').textContent.includes('refused')", timeout=5_000)
    assert page.locator(".tile").count() == 0

    page.fill("#token", "s3cret-token")
    page.click("#login-form button")
    page.wait_for_selector('.tile[data-stream="cam1"]', timeout=10_000)
    assert page.is_hidden("#login")
    # Asked once: a reload in the same tab goes straight to the fleet.
    page.reload()
    page.wait_for_selector('.tile[data-stream="cam1"]', timeout=10_000)
    assert page.is_hidden("#login")
