"""Claim stability of one producer daemon with many streams under a CPU hog.

N demo streams (the bundled clip, looped, sampled at --max-fps) on one daemon, with --hogs busy
processes competing for the cores; every --churn-s seconds a stream whose RTSP camera never
answers is removed and declared again, so its producer is slow to stop (it hangs in an open).
The figures: claims that lapsed (a stream's claim gone or held by no one, sampled every 0.25 s),
and the streams the daemon started and stopped (from its log) during the measured window.

.venv/bin/python -m benchmarks.daemon_claims --streams 100 --seconds 60 --hogs 2
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from common import desired, keys
from common.config import ProducerSettings, role_command
from common.redis_client import connect
from control.redis_server import PrivateRedis
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"
SAMPLE_S = 0.25


def _count(log: Path, needle: str) -> int:
    """Lines of the daemon itself (not its sources' state lines) that hold `needle`."""
    return sum(needle in line for line in log.read_text(errors="replace").splitlines() if "producer.daemon:" in line)


@click.command()
@click.option("--streams", default=100, help="Demo streams on the daemon.")
@click.option("--seconds", default=60.0, help="Measured window, with the hog running.")
@click.option("--hogs", default=2, help="Busy processes (one core each).")
@click.option("--max-fps", default=1.0, help="Each stream's sampling rate.")
@click.option("--settle-s", default=90.0, help="Longest wait for every stream to be claimed before the hog starts.")
@click.option("--churn-s", default=5.0, help="Remove and declare again the hanging stream this often (0: never).")
def main(streams: int, seconds: float, hogs: int, max_fps: float, settle_s: float, churn_s: float) -> None:
    server = PrivateRedis()
    client = connect(server.url)
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)
    hang = ProducerSettings(
        stream="hang", source=f"rtsp://127.0.0.1:{silent.getsockname()[1]}/s", open_timeout_s=8, redis_url=server.url
    )
    names = [f"cam{i:03d}" for i in range(streams)]
    for name in names:
        desired.put(
            client, ProducerSettings(stream=name, source="demo", loop=True, max_fps=max_fps, redis_url=server.url)
        )
    log = Path(tempfile.mkdtemp(prefix="rtai-bench-")) / "daemon.log"
    env = dict(os.environ, RTAI_REDIS_URL=server.url, PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        daemon = subprocess.Popen(role_command("control", "-v", "producer"), env=env, cwd=ROOT, stdout=out, stderr=out)
    hog_procs: list[subprocess.Popen] = []
    claim_keys = [keys.claim(n) for n in names]
    try:
        t_up = time.monotonic()
        try:
            wait_for(lambda: all(client.mget(claim_keys)), timeout=settle_s, interval=0.5, what="every stream claimed")
            settled_s: float | None = round(time.monotonic() - t_up, 1)
        except AssertionError:
            settled_s = None  # never all claimed at once (flapping): measured all the same
        hog_procs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(hogs)]
        starts0, stops0 = _count(log, ": running "), _count(log, ": stopped ")
        lapses = unclaimed_samples = samples = 0
        held = dict(zip(names, (o is not None for o in client.mget(claim_keys)), strict=True))
        t0 = time.monotonic()
        next_churn = t0 if churn_s else float("inf")
        while (now := time.monotonic()) - t0 < seconds:
            if now >= next_churn:
                if desired.get(client, "hang") is None:
                    desired.put(client, hang)
                else:
                    desired.remove(client, "hang")
                next_churn = now + churn_s
            for name, owner in zip(names, client.mget(claim_keys), strict=True):
                samples += 1
                if owner is None:
                    unclaimed_samples += 1
                lapses += held[name] and owner is None
                held[name] = owner is not None
            time.sleep(SAMPLE_S)
        figures = {
            "streams": streams,
            "seconds": seconds,
            "hogs": hogs,
            "max_fps": max_fps,
            "all_claimed_after_s": settled_s,
            "claims_lapsed": lapses,
            "unclaimed_share": round(unclaimed_samples / max(samples, 1), 4),
            "starts": _count(log, ": running ") - starts0,
            "stops": _count(log, ": stopped ") - stops0,
            "lost_claim_warnings": _count(log, "lost its claim"),
            "lapsed_and_retaken_warnings": _count(log, "are taken again"),
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(figures))
    finally:
        for proc in [*hog_procs, daemon]:
            proc.terminate()
        for proc in [*hog_procs, daemon]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        silent.close()
        server.stop()


if __name__ == "__main__":
    main()
