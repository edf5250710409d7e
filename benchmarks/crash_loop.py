"""Crash-loop poison: a batch that SIGKILLs every worker that runs it, under a supervisor of two
workers, while a healthy stream keeps flowing. The figure is the time from the poison batch's first
dequeue to its frames being settled failed (three deaths, three restarts of a child), and the
healthy frames lost meanwhile (expected 0).

.venv/bin/python -m benchmarks.crash_loop --runs 5
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
from control.redis_server import PrivateRedis
from tests.helpers import wait_for
from tests.integration.fleet import frames, sink

ROOT = Path(__file__).resolve().parent.parent

SUPERVISOR = ["worker", "--workers", "2", "--detector", "sleep", "--sleep-ms", "20", "--preload", ""]


def _alive(client) -> list[str]:
    names = (raw.decode() for raw in client.smembers(keys.WORKERS))
    return [n for n in names if client.exists(keys.worker_alive(n))]


def run_once(healthy_batches: int) -> dict[str, float | int]:
    server = PrivateRedis()
    client = connect(server.url)
    env = dict(os.environ, RTAI_REDIS_URL=server.url)
    sup = subprocess.Popen(
        role_command("control", *SUPERVISOR, "--fault-batch", "poison#1"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(_alive(client)) == 2, timeout=60, what="two workers")
        poison, healthy = sink(client, "poison"), sink(client, "healthy")
        poison.push(frames(4))
        (job_id,) = (j.decode() for j in client.lrange(keys.queue_key("poison"), 0, -1))

        def held() -> bool:
            return any(client.hexists(keys.inflight(n), job_id) for n in _alive(client))

        wait_for(held, timeout=10, interval=0.001, what="the poison batch's first dequeue")
        t_first = time.monotonic()
        for _ in range(healthy_batches):  # the healthy stream flows while the poison batch loops
            healthy.push(frames(4))
            time.sleep(0.05)
        wait_for(
            lambda: ledger.read(client, "poison")["failed"] == 4, timeout=60, interval=0.005, what="poison settled"
        )
        took = time.monotonic() - t_first
        wait_for(lambda: ledger.read(client, "healthy")["in_flight"] == 0, timeout=60, what="healthy drained")
        h = ledger.read(client, "healthy")
        wait_for(lambda: len(_alive(client)) == 2, timeout=60, what="both children back")
        return {
            "first_dequeue_to_failed_s": round(took, 2),
            "healthy_produced": h["produced"],
            "healthy_published": h["published"],
            "healthy_lost": h["produced"] - h["published"],
            "children_alive_after": len(_alive(client)),
        }
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(timeout=60)
        server.stop()


@click.command()
@click.option("--runs", default=5, show_default=True)
@click.option("--healthy-batches", default=40, show_default=True)
def main(runs: int, healthy_batches: int) -> None:
    results = [run_once(healthy_batches) for _ in range(runs)]
    times = [r["first_dequeue_to_failed_s"] for r in results]
    summary = {
        "runs": runs,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "min_s": min(times),
        "healthy_lost": sum(int(r["healthy_lost"]) for r in results),
    }
    click.echo(json.dumps({"summary": summary, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
