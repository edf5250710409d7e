"""Another client's latency while hostile clients hit the API (issue 17), loopback only, time-bounded.

One `rtai api --token` on a private Redis, started with a soft open-file limit of --fd-limit (1024,
the usual default; the API raises its own limit if its code does). A prober sends
GET /api/v1/realtime-ai/services with the token every --interval s, on a new connection each time,
first with no attack, then while:
- a sender posts unauthenticated --body-mb MB bodies to /start, one after the other;
- --slow connections send half a request and then one header byte every 5 s (slowloris); a
  connection the server closes is opened again after 1 s.
Reports the prober's p50/p99/max and failures per phase, the API's peak RSS, what the big bodies
got and how fast, and how many slow connections the server closed.

Before and after: `--code-root` runs the API from another checkout (e.g. `git archive main`).

.venv/bin/python -m benchmarks.api_hostile --window 20
.venv/bin/python -m benchmarks.api_hostile --window 20 --code-root /tmp/main-checkout
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import psutil

from control.redis_server import PrivateRedis
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
P = "/api/v1/realtime-ai"
TOKEN = "bench-token"
#: A slow connection sends one more header byte this often (well under any sane header timeout).
TRICKLE_S = 5.0


def _raise_own_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


def _start_api(code_root: Path, redis_url: str, fd_limit: int, log: Path) -> tuple[int, subprocess.Popen]:
    port = free_port()

    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(fd_limit, hard), hard))

    env = dict(os.environ, RTAI_REDIS_URL=redis_url, PYTHONPATH=str(code_root), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "control", "api", "--port", str(port), "--token", TOKEN],
        cwd=code_root,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=limit,  # the benchmark starts no thread before this
    )
    wait_for(lambda: _probe(port, 1.0) is not None, timeout=60, what="rtai api answering")
    return port, proc


def _probe(port: int, timeout: float) -> float | None:
    """Seconds for one authorized GET /services on a new connection; None if it failed."""
    t0 = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", f"{P}/services", headers={"Authorization": f"Bearer {TOKEN}"})
        ok = conn.getresponse().status == 200
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    return time.perf_counter() - t0 if ok else None


def _probe_for(port: int, seconds: float, interval: float) -> dict:
    lat, failed = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = _probe(port, 10.0)
        if got is None:
            failed += 1
        else:
            lat.append(got * 1000)
        time.sleep(interval)
    lat.sort()
    pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
    return {
        "ok": len(lat),
        "failed": failed,
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": pick(0.99),
        "max_ms": round(lat[-1], 1) if lat else None,
    }


def _big_bodies(port: int, mb: int, stop: threading.Event, out: list[dict]) -> None:
    head = (
        f"POST {P}/start HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {mb * 2**20}\r\n\r\n"
    ).encode()
    chunk = b"[" + b"1," * (2**19 - 1) + b"1"  # 1 MB of a JSON array that never closes
    while not stop.is_set():
        t0, sent, reply = time.perf_counter(), 0, b""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                answered = select.poll()
                answered.register(s, select.POLLIN)
                s.sendall(head)
                while sent < mb * 2**20 and not stop.is_set() and not reply:
                    if answered.poll(0):  # answered before the body is in
                        reply = s.recv(64)
                        break
                    s.sendall(chunk[: min(len(chunk), mb * 2**20 - sent)])
                    sent += len(chunk)
                reply = reply or s.recv(64)
        except OSError as exc:
            reply = reply or f"closed ({type(exc).__name__})".encode()
        status = reply.split(b"\r\n", 1)[0].decode(errors="replace")
        out.append({"status": status, "s": round(time.perf_counter() - t0, 2), "mb_sent": sent // 2**20})
        time.sleep(0.1)


async def _slow_one(port: int, stop: threading.Event, stats: dict) -> None:
    head = f"GET {P}/services HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_failed"] += 1
            await asyncio.sleep(1.0)
            continue
        stats["open"] += 1
        try:
            writer.write(head)
            while not stop.is_set():
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1), TRICKLE_S) == b"":
                        break
                except TimeoutError:
                    writer.write(b"a")
            else:
                writer.close()
                return
        except OSError:
            pass
        stats["open"] -= 1
        stats["closed_by_server"] += 1
        writer.close()
        await asyncio.sleep(1.0)


def _slowloris(port: int, n: int, stop: threading.Event, stats: dict) -> None:
    async def main() -> None:
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(_slow_one(port, stop, stats)))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def _rss_sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], proc.memory_info().rss)
        except psutil.Error:
            return
        time.sleep(0.2)


@click.command()
@click.option("--code-root", type=click.Path(path_type=Path), default=ROOT, help="Checkout the API runs from.")
@click.option("--slow", default=3000, show_default=True, help="Slow (slowloris) connections.")
@click.option("--body-mb", default=100, show_default=True, help="Size of each unauthenticated body.")
@click.option("--window", default=20.0, show_default=True, help="Seconds of each phase.")
@click.option("--interval", default=0.1, show_default=True, help="Seconds between the prober's requests.")
@click.option("--fd-limit", default=1024, show_default=True, help="Soft open-file limit the API starts with.")
def main(code_root: Path, slow: int, body_mb: int, window: float, interval: float, fd_limit: int) -> None:
    _raise_own_fd_limit(slow + 256)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"rtai-api-hostile-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    server = PrivateRedis()
    port, api = _start_api(code_root.resolve(), server.url, fd_limit, tmp / "api.log")
    report: dict = {"code_root": str(code_root), "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=_rss_sampler, args=(api.pid, stop, peak), daemon=True)
    sampler.start()
    try:
        report["idle"] = _probe_for(port, window, interval)
        report["rss_idle_mb"] = peak[0] // 2**20
        bodies: list[dict] = []
        slow_stats = {"open": 0, "closed_by_server": 0, "connect_failed": 0}
        attackers = [
            threading.Thread(target=_big_bodies, args=(port, body_mb, stop, bodies), daemon=True),
            threading.Thread(target=_slowloris, args=(port, slow, stop, slow_stats), daemon=True),
        ]
        for t in attackers:
            t.start()
        time.sleep(min(5.0, window / 4))  # let the slow connections open
        report["attack"] = _probe_for(port, window, interval)
        report["slow_during_attack"] = dict(slow_stats)
        stop.set()
        for t in attackers:
            t.join(timeout=35)
        report["bodies"] = {"sent": len(bodies), "first": bodies[:3], "answers": sorted({b["status"] for b in bodies})}
        report["rss_peak_mb"] = peak[0] // 2**20
        report["api_alive"] = api.poll() is None
        report["too_many_open_files"] = "Too many open files" in (tmp / "api.log").read_text(errors="replace")
        report["load_after"] = os.getloadavg()
        print(json.dumps(report, indent=2))
    finally:
        stop.set()
        api.terminate()
        try:
            api.wait(timeout=20)
        except subprocess.TimeoutExpired:
            api.kill()
        server.stop()


if __name__ == "__main__":
    main()
