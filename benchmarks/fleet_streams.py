"""End-to-end fleet frames/s and latency with N live streams: producers, Redis and workers on one host.

A synthetic clip (the demo clip upscaled to --size, default 1920x1080) is looped by N producers at
--fps each; W workers (sharing one device) detect; the results are read from the live results
channels. Reported over a window after a warm-up: results/s, and latency t_done - t_capture
(Redis time) p50/p99. Prints one JSON document.

    python -m benchmarks.fleet_streams --device cuda:0 --workers 2 --streams 8 --imgsz 640 --model yolo11s
    python -m benchmarks.fleet_streams --device cpu --streams 2 --size 320x240 --seconds 5   # CPU dry run
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import click
import cv2
import numpy as np

from common import keys
from common.config import DEMO_CLIP, role_command
from common.redis_client import connect
from common.wire import decode_result
from control.redis_server import PrivateRedis
from devkit.procs import stop_all
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent


def make_clip(path: Path, size: tuple[int, int], frames: int = 60) -> Path:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    n = 0
    while n < frames:
        ok, img = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.write(cv2.resize(img, size, interpolation=cv2.INTER_LINEAR))
        n += 1
    out.release()
    cap.release()
    return path


def collect(client, stop: threading.Event, sink: list[tuple[float, float]]) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(keys.results_pattern())
    while not stop.is_set():
        msg = pubsub.get_message(timeout=0.2)
        if msg and msg["type"] == "pmessage":
            r = decode_result(msg["data"])
            sink.append((r.t_capture, r.t_done))
    pubsub.close()


@click.command()
@click.option("--device", default="cpu", show_default=True)
@click.option("--workers", default=1, show_default=True)
@click.option("--engine", default="auto", show_default=True)
@click.option("--streams", default=8, show_default=True)
@click.option("--fps", "stream_fps", default=30.0, show_default=True, help="Frames/s each producer samples.")
@click.option("--size", default="1920x1080", show_default=True)
@click.option("--imgsz", default=640, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--model", default="rtai-shapes", show_default=True)
@click.option("--engine-batch", default=8, show_default=True, help="Batch of the exported engine workers use.")
@click.option("--threads", default=2, show_default=True)
@click.option("--warmup", default=5.0, show_default=True, help="Seconds before the window opens.")
@click.option("--seconds", default=20.0, show_default=True, help="Measurement window.")
@click.option("--prefetch", default="auto", show_default=True, help="The workers' --prefetch.")
def main(
    device: str,
    workers: int,
    engine: str,
    streams: int,
    stream_fps: float,
    size: str,
    imgsz: int,
    batch_size: int,
    model: str,
    engine_batch: int,
    threads: int,
    warmup: float,
    seconds: float,
    prefetch: str,
) -> None:
    w, h = (int(x) for x in size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rtai-fleet-streams-"))
    clip = make_clip(tmp / "clip.mp4", (w, h))
    server = PrivateRedis()
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    got: list[tuple[float, float]] = []
    try:
        client = connect(server.url)
        env = dict(os.environ, RTAI_REDIS_URL=server.url)
        for _ in range(workers):
            args = ["--device", device, "--engine", engine, "--threads", str(threads), "--preload", model]
            args += ["--engine-batch", str(engine_batch), "--prefetch", prefetch]
            procs.append(subprocess.Popen(role_command("control", "worker", *args), env=env, cwd=ROOT))
        wait_for(
            lambda: (
                sum(bool(client.exists(keys.worker_alive(x.decode()))) for x in client.smembers(keys.WORKERS))
                >= workers
            ),
            timeout=300,
            what="workers",
        )
        reader = threading.Thread(target=collect, args=(connect(server.url), stop, got), daemon=True)
        reader.start()
        for i in range(streams):
            args = ["--source", str(clip), "--stream", f"s{i}", "--loop", "--max-fps", str(stream_fps)]
            args += ["--batch-size", str(batch_size), "--imgsz", str(imgsz), "--model", model]
            procs.append(subprocess.Popen(role_command("control", "producer", *args), env=env, cwd=ROOT))
        t_open = time.time() + warmup
        time.sleep(warmup + seconds)
        t_close = time.time()
    finally:
        stop.set()
        stop_all(procs, timeout=60)
        server.stop()
    window = [(c, d) for c, d in got if t_open <= d <= t_close]
    lat = np.array([d - c for c, d in window]) * 1000 if window else np.array([np.nan])
    print(
        json.dumps(
            {
                "device": device,
                "workers": workers,
                "engine": engine,
                "streams": streams,
                "stream_fps": stream_fps,
                "offered_fps": streams * stream_fps,
                "size": size,
                "imgsz": imgsz,
                "batch_size": batch_size,
                "model": model,
                "window_s": round(t_close - t_open, 1),
                "results": len(window),
                "fps": round(len(window) / (t_close - t_open), 1),
                "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
                "load_avg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
