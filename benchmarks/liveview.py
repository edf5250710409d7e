"""The live view's costs, in one run on a private Redis:

1. preview cost on the producer: ms per frame (amortised over every frame) and per preview written,
   next to the batch encode it rides on, for imgsz 320 (batch JPEG reused) and 640 (re-encoded);
   Redis bytes/s per stream (SET + PUBLISH payloads at the overview's 4 previews/s);
2. page load to first drawn box on the demo (median of N page loads; Debian's chromium, Playwright);
3. API CPU with 0 and then 8 open pages on 4 streams (noop detector, so the worker's model does not
   compete for the CPU), round-robin over --rounds.

.venv/bin/python -m benchmarks.liveview --loads 5 --rounds 2
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import click
import cv2
import psutil

from common import keys
from common.config import ASSETS_DIR, role_command
from common.images import encode_frame
from common.redis_client import connect
from control.redis_server import PrivateRedis
from producer.preview import PreviewWriter
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def _clip_frames(n: int) -> list:
    cap = cv2.VideoCapture(str(ASSETS_DIR / "demo.mp4"))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(img)
    return out


def preview_cost(client, *, n: int = 400, fps: float = 10.0, batch: int = 4) -> dict:
    """The producer's encode and the preview hook on the same frames; previews at 4/s of a 10 fps stream."""
    images = _clip_frames(n)
    out = {}
    for imgsz in (320, 640):
        big = [cv2.resize(img, (1280, 960)) for img in images] if imgsz == 640 else images
        t0 = time.perf_counter()
        frames = [encode_frame(img, seq=0, t_capture=i / fps, imgsz=imgsz) for i, img in enumerate(big)]
        encode_s = time.perf_counter() - t0
        writer = PreviewWriter(client, f"bench{imgsz}")
        for i in range(0, n, batch):
            writer.offer(frames[i : i + batch], seq0=i)
        duration = n / fps
        out[f"imgsz{imgsz}"] = {
            "frame": f"{frames[0].dw}x{frames[0].dh}",
            "encode_ms_per_frame": round(encode_s / n * 1000, 3),
            "preview_ms_per_frame": round(writer.seconds / n * 1000, 3),
            "preview_ms_per_preview": round(writer.seconds / max(1, writer.written) * 1000, 3),
            "previews_per_s": round(writer.written / duration, 2),
            "reused": writer.reused,
            "written": writer.written,
            "preview_bytes": round(writer.bytes / max(1, writer.written)),
            "redis_in_bytes_per_s": round(2 * writer.bytes / duration),  # SET + PUBLISH
        }
    return out


class Fleet:
    def __init__(self, url: str, tmp: Path) -> None:
        self.env = dict(os.environ, RTAI_REDIS_URL=url, PYTHONUNBUFFERED="1")
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def rtai(self, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"p{len(self.procs)}.log", "wb")
        p = subprocess.Popen(
            role_command("control", *args), env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _api(fleet: Fleet) -> tuple[str, subprocess.Popen]:
    import httpx  # noqa: PLC0415

    port = free_port()
    proc = fleet.rtai("api", "--port", str(port))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(base + "/static/app.js", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, what="api")
    return base, proc


def _browser(pw):
    return pw.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-background-networking"]
    )


def first_box(client, url: str, tmp: Path, loads: int) -> dict:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    fleet = Fleet(url, tmp)
    try:
        fleet.rtai("worker", "--threads", "1")
        fleet.rtai("producer", "--source", "demo", "--stream", "demo", "--loop", "--max-fps", "8", "--batch-size", "2")
        base, _ = _api(fleet)
        wait_for(lambda: client.xlen(keys.history("demo")) > 20, timeout=120, what="results flowing")
        times = []
        with sync_playwright() as pw:
            b = _browser(pw)
            for _ in range(loads):
                ctx = b.new_context()
                page = ctx.new_page()
                page.goto(base + "/")
                page.wait_for_function("() => window.__rtai.firstBoxAt !== null", timeout=30_000)
                times.append(page.evaluate("window.__rtai.firstBoxAt"))
                ctx.close()
            b.close()
        lat = client.xrevrange(keys.history("demo"), count=1)
        return {"ms": [round(t) for t in times], "median_ms": round(statistics.median(times)), "results": bool(lat)}
    finally:
        fleet.close()


def api_cpu(client, url: str, tmp: Path, rounds: int, window_s: float) -> dict:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    fleet = Fleet(url, tmp)
    try:
        fleet.rtai("worker", "--detector", "noop", "--preload", "")
        for i in range(4):
            fleet.rtai("producer", "--source", "demo", "--stream", f"s{i}", "--loop", "--max-fps", "10")
        base, api = _api(fleet)
        wait_for(lambda: all(client.xlen(keys.history(f"s{i}")) > 10 for i in range(4)), timeout=60, what="4 streams")
        proc = psutil.Process(api.pid)

        def cpu_pct() -> float:
            c0, t0 = proc.cpu_times(), time.monotonic()
            time.sleep(window_s)
            c1, t1 = proc.cpu_times(), time.monotonic()
            return round(((c1.user + c1.system) - (c0.user + c0.system)) / (t1 - t0) * 100, 1)

        out: dict[str, list[float]] = {"0 pages": [], "8 pages": [], "frames_per_page_per_s": []}
        with sync_playwright() as pw:
            b = _browser(pw)
            for _ in range(rounds):
                out["0 pages"].append(cpu_pct())
                ctxs = [b.new_context() for _ in range(8)]
                pages = [c.new_page() for c in ctxs]
                for p in pages:
                    p.goto(base + "/")
                drawn = lambda ps=pages: all(p.evaluate("window.__rtai.framesDrawn") > 0 for p in ps)  # noqa: E731
                wait_for(drawn, timeout=30, what="8 pages drawing")
                n0 = sum(p.evaluate("window.__rtai.framesDrawn") for p in pages)
                out["8 pages"].append(cpu_pct())
                n1 = sum(p.evaluate("window.__rtai.framesDrawn") for p in pages)
                out["frames_per_page_per_s"].append(round((n1 - n0) / 8 / window_s, 1))
                for c in ctxs:
                    c.close()
            b.close()
        return out
    finally:
        fleet.close()


@click.command()
@click.option("--loads", default=5, show_default=True, help="Page loads for the first-box median.")
@click.option("--rounds", default=2, show_default=True, help="Round-robin rounds of 0 / 8 pages.")
@click.option("--window", default=10.0, show_default=True, help="Seconds of each CPU measurement.")
def main(loads: int, rounds: int, window: float) -> None:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rtai-liveview-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis()
    client = connect(server.url)
    try:
        report = {"uptime": os.getloadavg(), "preview": preview_cost(client)}
        client.flushall()
        report["first_box"] = first_box(client, server.url, tmp, loads)
        client.flushall()
        report["api_cpu_pct_4_streams"] = api_cpu(client, server.url, tmp, rounds, window)
        report["load_after"] = os.getloadavg()
        print(json.dumps(report, indent=2))
    finally:
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
