"""`rtai up` plus the live view's "Add camera": the new camera's boxes are drawn within 10 s."""

from __future__ import annotations

import os
import subprocess

import httpx
import psutil
import pytest

from common.config import role_command

from ..helpers import ROOT, free_port, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]

DRAWN = "(s) => { const d = window.__rtai.lastDrawn[s]; return d && d.drawn.length ? d : null; }"


@pytest.fixture
def up(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RTAI_REDIS_URL"}  # up's own private Redis
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            role_command("control", "up", "--no-export", "--threads", "2", "--max-fps", "5", "--api-port", str(port)),
            cwd=ROOT,
            env=dict(env, PYTHONUNBUFFERED="1", XDG_RUNTIME_DIR=str(tmp_path)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def serving() -> bool:
        try:
            return httpx.get(base + "/static/app.js", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(serving, timeout=60, what=f"rtai up's API:\n{log.read_text()}")
        yield base
    finally:
        kids = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for kid in kids:
            if kid.is_running():
                kid.kill()


def test_a_camera_added_from_the_page_of_rtai_up_shows_its_boxes_within_10_s(up, page):
    page.goto(up + "/")
    # The demo's boxes first: the worker has loaded its model.
    page.wait_for_function(DRAWN, arg="demo", timeout=90_000)
    page.click("#add-btn")
    page.fill('[name="stream_config.stream_id"]', "porch")
    page.fill('[name="stream_config.url"]', "demo")
    page.select_option('[name="stream_config.protocol"]', "file")
    page.check('[name="stream_config.loop"]')
    t0 = page.evaluate("performance.now()")
    page.click("#add-submit")
    drawn = page.wait_for_function(DRAWN, arg="porch", timeout=10_000).json_value()
    took_ms = page.evaluate("performance.now()") - t0
    assert drawn["drawn"] and took_ms < 10_000, took_ms
    page.wait_for_selector('.tile[data-stream="porch"][data-state="running"]', timeout=5_000)
