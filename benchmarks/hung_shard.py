"""A hung shard beside a live one (issue 19, part 2): how long the other shard's stream stalls.

    .venv/bin/python -m benchmarks.hung_shard --hang-s 15

Two private redis-servers as two shards, one no-op worker serving both (`rtai worker --detector
noop`), a producer per stream (the demo clip at `--fps`, batches of 1), each stream placed on its
own shard. Once both publish, shard 1 is SIGSTOPped for `--hang-s` seconds (it neither answers nor
refuses, as behind a network partition), then SIGCONTed. The stream on shard 0 is read every 0.1 s:
reported are its longest stretch without a new result while shard 1 hung, its rate before and
during the hang, and whether shard 1's stream published again after SIGCONT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import click
import redis

from common import ledger
from common.config import role_command
from common.shards import Shards
from control.redis_server import PrivateRedis

from .fleet_vs_direct import ROOT

SAMPLE_S = 0.1


def _published(client: redis.Redis, stream: str) -> int:
    try:
        return int(ledger.read(client, stream)["published"])
    except redis.RedisError:
        return -1


def _placed(shards: Shards) -> tuple[str, str]:
    by: dict[int, str] = {}
    for i in range(100):
        by.setdefault(shards.index_for(f"cam-{i}"), f"cam-{i}")
    return by[0], by[1]


@click.command()
@click.option("--hang-s", default=15.0, show_default=True, help="How long shard 1 is SIGSTOPped.")
@click.option("--fps", default=10.0, show_default=True, help="Frames a second each producer samples.")
def main(hang_s: float, fps: float) -> None:
    a, b = PrivateRedis(), PrivateRedis()
    procs: list[subprocess.Popen] = []
    try:
        url = f"{a.url} {b.url}"
        on_a, on_b = _placed(Shards.from_url(url))
        env = dict(os.environ, RTAI_REDIS_URL=url)
        quiet = {"env": env, "cwd": ROOT, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        worker = role_command("control", "worker", "--detector", "noop", "--preload", "")
        procs.append(subprocess.Popen(worker, **quiet))
        for s in (on_a, on_b):
            args = ("--source", "demo", "--stream", s, "--loop", "--max-fps", str(fps), "--batch-size", "1")
            procs.append(subprocess.Popen(role_command("control", "producer", *args), **quiet))
        ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
        deadline = time.monotonic() + 120
        while min(_published(ca, on_a), _published(cb, on_b)) < 20:
            if time.monotonic() > deadline:
                raise click.ClickException("the streams never published")
            time.sleep(0.2)
        t0, p0 = time.monotonic(), _published(ca, on_a)
        time.sleep(3)
        rate_before = (_published(ca, on_a) - p0) / (time.monotonic() - t0)
        b.proc.send_signal(signal.SIGSTOP)
        t_stop, p_stop = time.monotonic(), _published(ca, on_a)
        last, last_at, longest = p_stop, t_stop, 0.0
        try:
            while (now := time.monotonic()) - t_stop < hang_s:
                p = _published(ca, on_a)
                if p > last:
                    longest, last, last_at = max(longest, now - last_at), p, now
                time.sleep(SAMPLE_S)
            longest = max(longest, time.monotonic() - last_at)
            rate_hung = (_published(ca, on_a) - p_stop) / (time.monotonic() - t_stop)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        resumed_from = _published(cb, on_b)
        deadline = time.monotonic() + 30
        while _published(cb, on_b) <= resumed_from and time.monotonic() < deadline:
            time.sleep(0.2)
        report = {
            "hang_s": hang_s,
            "fps": fps,
            "other_shard_rate_before": round(rate_before, 2),
            "other_shard_rate_during_hang": round(rate_hung, 2),
            "other_shard_longest_gap_s": round(longest, 2),
            "hung_shard_resumed": _published(cb, on_b) > resumed_from,
            "load": os.getloadavg(),
        }
        click.echo(json.dumps(report, indent=2))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        a.stop()
        b.stop()


if __name__ == "__main__":
    main()
