"""Tracking stage: throughput per process and the latency it adds, for each tracker type.

Tracker alone: `update` on N pre-built frames of B moving boxes (frames per CPU second of this process).
Throughput: one TrackingStage (in this process) drains a stream's history pre-filled with N results
of B moving boxes each; frames/s = N / wall time, and N / CPU time of this process (the machine is
shared: CPU time says what the process costs, wall time what it got). Round-robin over tracker types
and 5 and 50 boxes, so ratios come from one run. Latency: one `rtai tracker` process; this process
feeds S streams at --fps each (results out of order by pairs, as two workers finish them) and reads
every tracked frame; added latency = t_tracked - t_done (the result's publish time), reorder wait
included (a frame waits only for its pair, published right after it).

    .venv/bin/python -m benchmarks.tracking
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import time

import click
import numpy as np

from analytics.stage import TrackingStage
from analytics.tracker import stream_tracker
from common import desired, keys
from common.analytics_settings import TrackSettings
from common.config import ProducerSettings, role_command
from common.redis_client import connect
from common.wire import unpackb
from control.redis_server import PrivateRedis
from devkit.results import encoded_result
from tests.helpers import wait_for

W, H = 1280, 720


def boxes_at(n_boxes: int, f: int, rng: np.random.Generator, starts: np.ndarray) -> list[list[float]]:
    out = []
    for i in range(n_boxes):
        x = (starts[i, 0] + 3 * f) % (W - 60)
        y = (starts[i, 1] + (i % 7 - 3) * f) % (H - 60)
        out.append([float(x), float(y), float(x + 40), float(y + 50), 0.9, float(i % 3)])
    return out


def result(stream: str, seq: int, boxes: list) -> bytes:
    return encoded_result(stream, seq, boxes, w=W, h=H, model="m")


def declare(client, stream: str, tracker: str = "bytetrack") -> None:
    analytics = {
        "track": {"reorder_wait_s": 0.5, "tracker_type": tracker},
        "zones": [{"name": "z", "points": [[0, 0], [0.5, 0], [0.5, 1]]}],
    }
    desired.put(client, ProducerSettings(stream=stream, source="demo", analytics=analytics))


def tracker_alone(tracker: str, n_boxes: int, n_frames: int, rep: int) -> float:
    rng = np.random.default_rng(rep)
    starts = rng.uniform(0, 600, (n_boxes, 2))
    frames = [np.array(boxes_at(n_boxes, f, rng, starts)) for f in range(n_frames)]
    ids = itertools.count(1)
    track = stream_tracker(TrackSettings(tracker_type=tracker), lambda: next(ids))
    t0 = time.process_time()
    for boxes in frames:
        track.update(boxes)
    return n_frames / (time.process_time() - t0)


def throughput(url: str, tracker: str, n_boxes: int, n_frames: int, rep: int) -> tuple[float, float]:
    client = connect(url)
    stream = f"tp{tracker}{n_boxes}-{rep}"
    declare(client, stream, tracker)
    rng = np.random.default_rng(rep)
    starts = rng.uniform(0, 600, (n_boxes, 2))
    with client.pipeline(transaction=False) as pipe:
        for f in range(n_frames):
            pipe.xadd(keys.history(stream), {"r": result(stream, f, boxes_at(n_boxes, f, rng, starts))})
        pipe.execute()
    stage = TrackingStage.from_url(url, name=f"bench-{stream}")
    stage.claim_tick()
    for other in [s for s in stage.runs if s != stream]:
        stage.runs.pop(other)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < n_frames:
        done += stage.step()
    return n_frames / (time.perf_counter() - t0), n_frames / (time.process_time() - c0)


def latency(url: str, tracker: str, n_streams: int, fps: float, seconds: float) -> tuple[float, float, int]:
    client = connect(url)
    client.flushall()
    streams = [f"lat{n_streams}-{i}" for i in range(n_streams)]
    for s in streams:
        declare(client, s, tracker)
    tracker = subprocess.Popen(role_command("control", "tracker", "--redis-url", url))
    try:
        wait_for(lambda: all(client.get(keys.track_claim(s)) for s in streams), timeout=30, what="claims")
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(keys.tracks_channel("lat*"))
        rng = np.random.default_rng(0)
        starts = rng.uniform(0, 600, (5, 2))
        added: list[float] = []
        n = int(seconds * fps)
        t_next = time.monotonic()
        for pair in range(0, n, 2):
            for s in streams:  # two workers: the second frame of each pair is published first
                for f in (pair + 1, pair):
                    client.xadd(keys.history(s), {"r": result(s, f, boxes_at(5, f, rng, starts))})
            t_next += 2 / fps
            while (left := t_next - time.monotonic()) > 0:
                msg = pubsub.get_message(timeout=left)
                if msg:
                    m = unpackb(msg["data"])
                    added.append((m["t_tracked"] - m["t_done"]) * 1000)
        deadline = time.monotonic() + 5
        while len(added) < n * n_streams and time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.2)
            if msg:
                m = unpackb(msg["data"])
                added.append((m["t_tracked"] - m["t_done"]) * 1000)
    finally:
        tracker.terminate()
        tracker.wait(timeout=10)
    q = statistics.quantiles(added, n=100)
    return q[49], q[98], len(added)


@click.command()
@click.option("--frames", type=int, default=3000, show_default=True)
@click.option("--reps", type=int, default=3, show_default=True)
@click.option("--fps", type=float, default=10.0, show_default=True, help="Frames per second per stream (latency).")
@click.option("--seconds", type=float, default=10.0, show_default=True)
@click.option("--trackers", default="bytetrack,ultralytics-bytetrack", show_default=True)
@click.option("--streams", default="1,8,32", show_default=True, help="Stream counts for the latency runs.")
def main(frames: int, reps: int, fps: float, seconds: float, trackers: str, streams: str) -> None:
    types = trackers.split(",")
    report: dict = {"load_before": os.getloadavg()}
    server = PrivateRedis()
    try:
        alone: dict = {(t, b): [] for t in types for b in (5, 50)}
        tp: dict = {(t, b): [] for t in types for b in (5, 50)}
        for rep in range(reps):  # round robin: every case sees the same machine
            for t, b in tp:
                alone[(t, b)].append(tracker_alone(t, b, frames, rep))
                tp[(t, b)].append(throughput(server.url, t, b, frames, rep))
        for t, b in tp if reps else ():
            report[f"{t}_{b}_boxes"] = {
                "tracker_alone_frames_per_cpu_s": round(statistics.median(alone[(t, b)])),
                "stage_frames_per_s": round(statistics.median(w for w, _c in tp[(t, b)])),
                "stage_frames_per_cpu_s": round(statistics.median(c for _w, c in tp[(t, b)])),
            }
        for t in types:
            for n_streams in (int(n) for n in streams.split(",")):
                p50, p99, n = latency(server.url, t, n_streams, fps, seconds)
                report[f"{t}_added_ms_{n_streams}_streams"] = {"p50": round(p50, 2), "p99": round(p99, 2), "frames": n}
        report["load_after"] = os.getloadavg()
        click.echo(json.dumps(report, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
