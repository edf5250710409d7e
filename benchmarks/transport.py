"""The worker's job path without a model: transport ceiling, dynamic batching and scaling.

In one run, round-robin repetitions (the median is reported):
  noop     frames/s of one worker with a no-op detector over 640x480 JPEG batches (of 8, and of 1),
           with dynamic batching (--max-batch-frames 8) and without (1), and batches of 8 with the
           prefetch on (--prefetch settle; a CPU worker's default is off); Redis commands per job
           (INFO commandstats over the drain, commands inside scripts included, idle polls too)
  sleep    frames/s with a fixed-cost detector (20 ms/frame) at 1 and N workers: efficiency N-vs-1

  .venv/bin/python -m benchmarks.transport --frames 480 --reps 2 --workers 8
"""

from __future__ import annotations

import json
import os
import statistics

import click

from common import keys
from common.redis_client import connect
from control.redis_server import PrivateRedis

from .fleet_vs_direct import drained_fps, enqueue_all, load_frames, run_workers

AGE = ("--max-frame-age-ms", "600000")


def _commands(client) -> int:
    return sum(int(v["calls"]) for k, v in client.info("commandstats").items() if k.startswith("cmdstat_"))


def _run(client, url: str, frames, stream: str, batch: int, imgsz: int, workers: int, *args: str) -> dict:
    client.flushdb()
    enqueue_all(client, frames, stream, batch, imgsz, "rtai-shapes")
    jobs = client.llen(keys.queue_key(stream))
    before = _commands(client)
    run_workers(client, url, stream, workers, "--preload", "", *AGE, *args)
    commands = _commands(client) - before
    calls = sum(int(client.hget(k, "infer_calls") or 0) for k in client.scan_iter(keys.worker("*")))
    return {
        "fps": drained_fps(client, stream),
        "commands_per_job": commands / jobs,
        "jobs_per_call": jobs / max(calls, 1),
    }


@click.command()
@click.option("--frames", "n", default=480, show_default=True)
@click.option("--reps", default=2, show_default=True)
@click.option("--imgsz", default=640, show_default=True)
@click.option("--workers", default=8, show_default=True, help="The N of the scaling case.")
@click.option("--sleep-frames", default=320, show_default=True, help="Frames of the scaling case.")
def main(n: int, reps: int, imgsz: int, workers: int, sleep_frames: int) -> None:
    frames = load_frames(n)
    cases = {
        "noop b8 dyn8": (frames, 8, 1, "--detector", "noop", "--max-batch-frames", "8"),
        "noop b8 dyn8 prefetch": (
            frames, 8, 1, "--detector", "noop", "--max-batch-frames", "8", "--prefetch", "settle",
        ),
        "noop b8 dyn1": (frames, 8, 1, "--detector", "noop", "--max-batch-frames", "1"),
        "noop b1 dyn8": (frames, 1, 1, "--detector", "noop", "--max-batch-frames", "8"),
        "noop b1 dyn1": (frames, 1, 1, "--detector", "noop", "--max-batch-frames", "1"),
        "sleep20 b8 x1": (frames[:sleep_frames], 8, 1, "--detector", "sleep", "--sleep-ms", "20", "--threads", "1"),
        f"sleep20 b8 x{workers}": (
            frames[:sleep_frames], 8, workers, "--detector", "sleep", "--sleep-ms", "20", "--threads", "1",
        ),
    }  # fmt: skip
    seen: dict[str, list[dict]] = {k: [] for k in cases}
    server = PrivateRedis()
    try:
        client = connect(server.url)
        for _ in range(reps):
            for name, (fr, batch, nw, *args) in cases.items():
                seen[name].append(_run(client, server.url, fr, name.split()[0], batch, imgsz, nw, *args))
    finally:
        server.stop()
    report: dict[str, object] = {"load_before_after": os.getloadavg(), "imgsz": imgsz, "reps": reps}
    for name, runs in seen.items():
        report[name] = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    one = report["sleep20 b8 x1"]["fps"]  # type: ignore[index]
    many = report[f"sleep20 b8 x{workers}"]["fps"]  # type: ignore[index]
    report[f"scaling_efficiency_{workers}"] = round(many / (workers * one), 3)
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
