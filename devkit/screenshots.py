"""The docs' pictures of the live view, made by the project on its own demo fleet.

    .venv/bin/python -m devkit.screenshots            # writes docs/overview.png and docs/stream-page.png

It runs what a user runs: an RTSP camera (Debian's GStreamer RTSP server serving the demo clip,
scripts/rtsp_server.py), `rtai up --source demo --source <that camera> --api-port PORT`, and
Debian's chromium driven by Playwright (headless, `--no-sandbox`, no browser download). It waits
until both tiles show boxes and the fleet's p50 latency has settled, then takes the overview, and
the stream page of the demo once its sparklines have data. Needs the `make install` packages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from .clip_frames import write_clip_frames

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
CHROMIUM = "/usr/bin/chromium"
BOTH_TILES_DRAWN = "(s) => s.every((id) => ((window.__rtai.lastDrawn[id] || {drawn: []}).drawn.length > 0))"
#: The fleet has settled: every stream's p50 latency under this many ms (a cold start shows seconds).
SETTLED_P50_MS = 1500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise click.ClickException(f"timed out after {timeout:.0f} s waiting for {what}")


def _clip_frames(out: Path) -> Path:
    if not write_clip_frames(out):
        raise click.ClickException("cannot read the demo clip")
    return out


def _rtsp_camera(frames: Path) -> tuple[subprocess.Popen, str]:
    cmd = [SYSTEM_PYTHON, str(ROOT / "scripts" / "rtsp_server.py"), "--port", str(_free_port())]
    proc = subprocess.Popen([*cmd, "--frames", str(frames), "--fps", "15"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise click.ClickException(f"the RTSP server did not start: {line}")
    return proc, line.split()[1]


SETTLED = """(args) => args.streams.every((id) => {
  const s = ((window.__rtai.fleet || {}).streams || {})[id];
  return s && s.p50 !== null && s.p50 !== undefined && s.p50 < args.ms;
})"""


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs", show_default=True)
@click.option("--settle-s", type=float, default=20.0, show_default=True, help="Run this long before the pictures.")
def main(out: Path, settle_s: float) -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="rtai-shots-"))
    camera, url = _rtsp_camera(_clip_frames(Path(tempfile.mkdtemp(dir=tmp))))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RTAI_WEIGHTS_DIR": str(tmp / "weights"), "XDG_RUNTIME_DIR": str(tmp)}
    env.pop("RTAI_REDIS_URL", None)
    cmd = [sys.executable, "-m", "control", "up", "--source", "demo", "--source", url, "--api-port", str(port)]
    fleet = subprocess.Popen([*cmd, "--max-fps", "8"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait("the API", lambda: _get_ok(base + "/static/app.js"), timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
            )
            page = browser.new_context(viewport={"width": 1360, "height": 860}).new_page()
            page.goto(base + "/")
            streams = _wait(
                "two tiles",
                lambda: (
                    page.evaluate("Object.keys((window.__rtai.fleet || {streams: {}}).streams)")[:2]
                    if page.evaluate("Object.keys((window.__rtai.fleet || {streams: {}}).streams).length >= 2")
                    else None
                ),
                timeout=60,
            )
            time.sleep(settle_s)
            page.wait_for_function(SETTLED, arg={"streams": streams, "ms": SETTLED_P50_MS}, timeout=180_000)
            page.wait_for_function(BOTH_TILES_DRAWN, arg=streams, timeout=60_000)
            page.screenshot(path=str(out / "overview.png"))
            stream_page = page.context.new_page()
            stream_page.goto(f"{base}/stream/{streams[0]}")
            stream_page.wait_for_function(
                "(id) => ((window.__rtai.lastDrawn[id] || {drawn: []}).drawn.length > 0)",
                arg=streams[0],
                timeout=60_000,
            )
            time.sleep(8)  # the sparklines fill
            stream_page.screenshot(path=str(out / "stream-page.png"))
            browser.close()
    finally:
        fleet.send_signal(signal.SIGINT)
        try:
            fleet.wait(timeout=60)
        except subprocess.TimeoutExpired:
            fleet.kill()
        camera.terminate()
        camera.wait(timeout=10)
    click.echo(f"wrote {out / 'overview.png'} and {out / 'stream-page.png'}")


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
