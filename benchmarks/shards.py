"""One Redis against two shards (issue 19, part 2).

    .venv/bin/python -m benchmarks.shards --streams 8 --frames 960 --workers 2

Placement (no Redis needed): 64 stream ids (`cam-00` .. `cam-63`) placed by rendezvous hashing
over 1, 2 and 3 shards named as a deployment would name them (redis://redis-a:6379/0, ...), the
streams per shard, and the fraction of streams that move when a third shard is added (also over
10,000 ids, where the expected 1/3 shows without the noise of 64).

Drain (private redis-servers): the demo frames as 640x480 JPEG, `--frames` in all, split over
`--streams` streams in batches of 8, queued first; then `--workers` no-op workers (`rtai worker
--detector noop`) are let go together and drain every stream. Run once on one Redis and once on
two shards (each stream on the shard its id hashes to), in turns, `--reps` times. Reported: the
fleet's drain rate (frames / s from the first start to the last result), Redis CPU (INFO cpu) per
frame on each shard, and the streams on each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import click

from common import keys, ledger
from common.config import role_command
from common.redis_client import connect
from common.shards import Shards
from common.wire import decode_result
from control.redis_server import PrivateRedis

from .fleet_vs_direct import ROOT, enqueue_all, load_frames
from .redis_cost import redis_cpu_s, warm

NAMED = ["redis://redis-a:6379/0", "redis://redis-b:6379/0", "redis://redis-c:6379/0"]


def placement(n_ids: int = 64) -> dict[str, object]:
    ids = [f"cam-{i:02d}" for i in range(n_ids)]
    out: dict[str, object] = {}
    for n in (1, 2, 3):
        shards = Shards(NAMED[:n])
        out[f"{n} shard(s): streams per shard"] = [len(shards.by_shard(ids).get(i, [])) for i in range(n)]
    for how_many in (n_ids, 10_000):
        some = [f"cam-{i:02d}" for i in range(how_many)]
        two, three = Shards(NAMED[:2]), Shards(NAMED)
        moved = [s for s in some if two.index_for(s) != three.index_for(s)]
        out[f"moved adding a 3rd shard ({how_many} ids)"] = round(len(moved) / how_many, 3)
        # Every stream that moved went to the new shard: the others' streams stay where they were.
        out[f"moved, to the new shard ({how_many} ids)"] = all(three.index_for(s) == 2 for s in moved)
    return out


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drain(urls: list[str], frames, streams: list[str], workers: int) -> dict[str, object]:
    """Queue every stream's share of the frames on its shard, let `workers` no-op workers go, and
    time the drain; Redis CPU per frame on each shard (enqueue + drain)."""
    shards = Shards(urls)
    per = len(frames) // len(streams)
    clients = [c for _i, c in shards.clients()]
    for c in clients:
        c.flushdb()
        warm(c, [b"x" * 45_000] * (per * len(streams) // 8 // len(clients) + 1))
    cpu0 = [redis_cpu_s(c) for c in clients]
    for k, stream in enumerate(streams):
        enqueue_all(shards.for_stream(stream), frames[k * per : (k + 1) * per], stream, 8, 640, "rtai-shapes")
    for c in clients:
        c.set(keys.RQ_SUSPENDED, 1)
    env = dict(os.environ, RTAI_REDIS_URL=" ".join(urls))
    args = ("--detector", "noop", "--preload", "", "--max-batch-frames", "8")
    procs = [subprocess.Popen(role_command("control", "worker", *args), env=env, cwd=ROOT) for _ in range(workers)]
    try:
        wait_until(
            lambda: all(
                sum(bool(c.exists(keys.worker_alive(w.decode()))) for w in c.smembers(keys.WORKERS)) >= workers
                for c in clients
            ),
            180,
            "workers on every shard",
        )
        for c in clients:
            c.delete(keys.RQ_SUSPENDED)
        wait_until(
            lambda: all(ledger.read(shards.for_stream(s), s)["in_flight"] == 0 for s in streams), 600, "the drain"
        )
        cpu1 = [redis_cpu_s(c) for c in clients]
        results = [decode_result(f[b"r"]) for s in streams for _id, f in shards.for_stream(s).xrange(keys.history(s))]
        published = sum(ledger.read(shards.for_stream(s), s)["published"] for s in streams)
        t0, t1 = min(r.t_start for r in results), max(r.t_done for r in results)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    placed = shards.by_shard(streams)
    return {
        "drain_fps": round(len(results) / (t1 - t0), 1),
        "published": published,
        "streams_per_shard": [len(placed.get(i, [])) for i in range(len(urls))],
        "redis_cpu_us_per_frame_by_shard": [
            round((b - a) * 1e6 / max(1, per * len(placed.get(i, []))), 1)
            for i, (a, b) in enumerate(zip(cpu0, cpu1, strict=True))
        ],
        "redis_cpu_s_by_shard": [round(cpu1[i] - cpu0[i], 3) for i in range(len(urls))],
        "redis_cpu_us_per_frame_fleet": round((sum(cpu1) - sum(cpu0)) * 1e6 / published, 1),
    }


@click.command()
@click.option("--streams", "n_streams", default=8, show_default=True)
@click.option("--frames", "n", default=960, show_default=True, help="Frames in all, split over the streams.")
@click.option("--workers", default=2, show_default=True)
@click.option("--reps", default=2, show_default=True)
def main(n_streams: int, n: int, workers: int, reps: int) -> None:
    report: dict[str, object] = {"placement": placement()}
    frames = load_frames(n)
    servers = [PrivateRedis(), PrivateRedis()]
    try:
        for s in servers:
            connect(s.url).close()
        one, two = [servers[0].url], [s.url for s in servers]
        streams = [f"cam-{i:02d}" for i in range(n_streams)]
        runs: dict[str, list[dict[str, object]]] = {"1 shard": [], "2 shards": []}
        for _ in range(reps):  # in turns: the host is shared and noisy
            runs["1 shard"].append(drain(one, frames, streams, workers))
            runs["2 shards"].append(drain(two, frames, streams, workers))
        report["drain"] = runs
        pairs = zip(runs["1 shard"], runs["2 shards"], strict=True)
        ratios = [float(b["drain_fps"]) / float(a["drain_fps"]) for a, b in pairs]
        report["drain_fps_2_over_1"] = [round(r, 2) for r in ratios]
    finally:
        for s in servers:
            s.stop()
    report.update(workers=workers, streams=n_streams, frames=n, cores=os.cpu_count(), load=os.getloadavg())
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
