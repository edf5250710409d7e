"""Redis master kills under a live fleet with Sentinel (issue 19): how long until the fleet
publishes again, what a failover costs, and whether anything is published twice.

    .venv/bin/python -m benchmarks.failover --kills 5

A master and two replicas, three sentinels (devkit/sentinel.py, `down-after-milliseconds` 1000),
one producer looping the demo clip and two workers, all given only the `redis+sentinel://` URL. A
subscriber (in this process, re-subscribing after each failover) records every result message it
gets. For each kill: wait until the replicas are in sync, SIGKILL the master, and measure the
promotion (the sentinels agree on a new master) and the first result received after the kill; the
killed server comes back as a replica. `--hang` SIGSTOPs the master instead, which then answers
nothing and refuses nothing, as when a partition cuts it off; it is SIGKILLed once the new master's
ledger counts a publish. The first publish is read from that ledger, because a subscriber on the
hung master hears nothing until its connection's health check (15 s). At the end the producer
stops and the ledger must balance.
Prints one JSON object: promotion and time to first result (median, max), duplicate results, the
ledger, and the frames lost with writes the old masters acknowledged but never replicated (the
producer compares what it counted with what the last master's ledger holds).
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import click
import redis

from common import keys
from common.config import role_command
from common.ledger import read as read_ledger
from common.redis_client import connect
from common.wire import decode_result
from devkit.sentinel import Deployment, wait_until

STREAM = "ha"


class Listener(threading.Thread):
    """Every result message of STREAM as received, re-subscribing through the sentinels after a loss."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.got: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                pubsub = connect(self.url, check=False).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.results_channel(STREAM))
                while not self.stop.is_set():
                    msg = pubsub.get_message(timeout=0.2)
                    if msg and msg["type"] == "message":
                        self.got.append((time.monotonic(), decode_result(msg["data"]).seq))
            except redis.RedisError:
                time.sleep(0.05)


def _spawn(url: str, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RTAI_REDIS_URL": url}
    return subprocess.Popen(role_command("control", *args), env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


@click.command()
@click.option("--kills", type=int, default=5, show_default=True)
@click.option("--between-s", type=float, default=4.0, show_default=True, help="Steady running between kills.")
@click.option(
    "--hang",
    is_flag=True,
    help="SIGSTOP the master instead of killing it: it answers nothing and refuses nothing, as when a "
    "partition cuts it off (SIGKILLed after the fleet publishes again).",
)
def main(kills: int, between_s: float, hang: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="rtai-failover-"))
    dep = Deployment(root)
    workers = [_spawn(dep.url, root / f"worker{i}.log", "worker", "--threads", "1") for i in range(2)]
    producer = _spawn(
        dep.url, root / "producer.log", "producer", "--source", "demo", "--stream", STREAM, "--loop",
        "--max-fps", "10", "--batch-size", "2",
    )  # fmt: skip
    listener = Listener(dep.url)
    listener.start()
    rows = []
    try:
        wait_until(lambda: len(listener.got) >= 20, timeout=120, what="results before the first kill")
        for _ in range(kills):
            time.sleep(between_s)
            wait_until(lambda: dep.in_sync(2), timeout=30, what="the replicas in sync")
            old = dep.master_name()
            if hang:
                dep.procs[old].send_signal(signal.SIGSTOP)
            else:
                dep.kill(old)
            t_kill = time.monotonic()
            wait_until(lambda o=old: dep.master_port() not in (None, dep.ports[o]), timeout=30, what="a promotion")
            t_promoted = time.monotonic()
            seen = len(listener.got)
            new = dep.client()
            at_promotion = read_ledger(new, STREAM)["published"]
            wait_until(
                lambda c=new, n=at_promotion: read_ledger(c, STREAM)["published"] > n, timeout=60, what="a publish"
            )
            t_published = time.monotonic()
            if hang:
                dep.kill(old)
            wait_until(lambda s=seen: len(listener.got) > s, timeout=60, what="a result after the kill")
            t_first = next(t for t, _seq in listener.got[seen:])
            rows.append(
                {
                    "promotion_s": round(t_promoted - t_kill, 2),
                    "first_publish_s": round(t_published - t_kill, 2),
                    "first_result_s": round(t_first - t_kill, 2),
                }
            )
            dep.start_server(old, replica_of=dep.master_port())  # back, as a replica of the new master
        alive = all(p.poll() is None for p in [*workers, producer])
        producer.send_signal(signal.SIGTERM)
        producer.wait(timeout=60)
        ledger = wait_until(
            lambda: (c := read_ledger(dep.client(), STREAM))["in_flight"] == 0 and c, timeout=60, what="the drain"
        )
        time.sleep(1)
    finally:
        listener.stop.set()
        for p in [*workers, producer]:
            if p.poll() is None:
                p.kill()
        dep.close()
    seqs = [seq for _t, seq in listener.got]
    said = re.search(r"Redis lost (\d+) of the (\d+) frames", (root / "producer.log").read_text())
    lost, counted = (int(said.group(1)), int(said.group(2))) if said else (0, ledger["produced"])
    promotions = [r["promotion_s"] for r in rows]
    firsts = [r["first_result_s"] for r in rows]
    published = [r["first_publish_s"] for r in rows]
    print(
        json.dumps(
            {
                "kills": rows,
                "promotion_s": {"median": statistics.median(promotions), "max": max(promotions)},
                "first_result_after_kill_s": {"median": statistics.median(firsts), "max": max(firsts)},
                "first_result_after_promotion_s_max": round(
                    max(f - p for f, p in zip(firsts, promotions, strict=True)), 2
                ),
                "first_publish_after_promotion_s": {
                    "median": round(statistics.median(f - p for f, p in zip(published, promotions, strict=True)), 2),
                    "max": round(max(f - p for f, p in zip(published, promotions, strict=True)), 2),
                },
                "master": "SIGSTOPped (hung)" if hang else "SIGKILLed",
                "results_received": len(seqs),
                "duplicate_results": len(seqs) - len(set(seqs)),
                "no_process_exited": alive,
                "ledger": ledger,
                "frames_lost_with_unreplicated_writes": lost,
                "frames_the_producer_counted": counted,
                "load": os.getloadavg(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
