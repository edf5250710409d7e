"""Kill-to-requeue time: SIGKILL a worker in the middle of a job, time until the job runs again.

supervised  the worker is a child of `rtai worker --workers 2`; the supervisor requeues its job
            the moment waitpid returns and the sibling worker takes it
lease       two standalone workers; the killed one's job is requeued by the other's reaper once
            the killed worker's lease (2 s) has run out (a lost host or container)

.venv/bin/python -m benchmarks.kill_requeue --kills 12
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

import click

from common import keys, ledger
from common.config import role_command
from common.redis_client import connect
from common.wire import decode_result
from control.redis_server import PrivateRedis
from tests.helpers import wait_for
from tests.integration.fleet import frames, sink

ROOT = Path(__file__).resolve().parent.parent

WORKER = ["worker", "--detector", "sleep", "--sleep-ms", "250", "--preload", ""]


def _spawn(url: str, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, RTAI_REDIS_URL=url, RTAI_RESTART_BUDGET="1000")
    return subprocess.Popen(
        role_command("control", *args),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _alive(client) -> dict[str, int]:
    out = {}
    for raw in client.smembers(keys.WORKERS):
        name = raw.decode()
        pid = client.hget(keys.worker(name), "pid")
        if pid and client.exists(keys.worker_alive(name)):
            out[name] = int(pid)
    return out


def run_mode(mode: str, kills: int) -> dict[str, object]:
    server = PrivateRedis()
    procs: list[subprocess.Popen] = []
    try:
        client = connect(server.url)
        if mode == "supervised":
            procs.append(_spawn(server.url, [*WORKER[:1], "--workers", "2", *WORKER[1:]]))
        else:
            procs += [_spawn(server.url, WORKER) for _ in range(2)]
        s = sink(client, "bench")
        times = []
        for i in range(kills):
            wait_for(lambda: len(_alive(client)) == 2, timeout=60, what=f"two live workers ({mode}, kill {i})")
            s.push(frames(4))
            batch = i + 1
            holder = wait_for(
                lambda: [n for n in _alive(client) if client.hlen(keys.inflight(n))],
                timeout=10,
                interval=0.005,
                what="a worker holding the job",
            )[0]
            os.kill(_alive(client)[holder], signal.SIGKILL)
            t_kill = time.time()
            if mode == "lease":
                procs.append(_spawn(server.url, WORKER))  # a replacement host comes up later

            def rerun(b: int = batch) -> float | None:
                for _id, f in client.xrange(keys.history("bench")):
                    res = decode_result(f[b"r"])
                    if res.batch == b:
                        return res.t_start
                return None

            t_start = wait_for(rerun, timeout=30, interval=0.01, what="the job to run again")
            times.append(t_start - t_kill)
        wait_for(lambda: ledger.read(client, "bench")["in_flight"] == 0, timeout=30, what="drain")
        counts = ledger.read(client, "bench")
        return {
            "mode": mode,
            "kills": kills,
            "median_ms": round(statistics.median(times) * 1000),
            "max_ms": round(max(times) * 1000),
            "min_ms": round(min(times) * 1000),
            "frames_produced": counts["produced"],
            "frames_published": counts["published"],
            "frames_lost": counts["produced"] - counts["published"] - ledger.dropped(counts) - counts["failed"],
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        server.stop()


@click.command()
@click.option("--kills", default=12, show_default=True)
@click.option("--mode", type=click.Choice(["supervised", "lease", "both"]), default="both", show_default=True)
def main(kills: int, mode: str) -> None:
    modes = ["supervised", "lease"] if mode == "both" else [mode]
    click.echo(json.dumps([run_mode(m, kills) for m in modes], indent=2))


if __name__ == "__main__":
    main()
