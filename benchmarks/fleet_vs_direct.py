"""Fleet throughput against a plain in-process Ultralytics loop on the same frames and model.

Measures, in one run on one machine:
  direct   frames/s of `model.predict` over the frames in batches (no Redis, no JPEG)
  fleet    frames/s of one `rtai worker` draining the same frames, queued as JPEG batches
  noop     frames/s of one worker with a no-op detector: the transport ceiling
  per-frame cost of each step outside inference (JPEG encode, enqueue, worker path)

  .venv/bin/python -m benchmarks.fleet_vs_direct --frames 400 --threads 2 --batch-size 4 [--engine onnx]
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import click
import cv2
import numpy as np

from common import keys, ledger
from common.config import DEMO_CLIP, ProducerSettings, role_command
from common.images import decode_frame, encode_frame
from common.redis_client import connect
from common.wire import Batch, decode_batch, decode_result, encode_batch
from control.redis_server import PrivateRedis
from producer.enqueue import BatchSink
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
#: The frames are queued before the workers start (a slow model load took over the default 10 s):
#: none may go stale, or the drain would measure nothing.
QUEUED_FRAME_AGE_MS = 3_600_000


def load_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(img)
    return frames


def direct(frames: list[np.ndarray], model: str, threads: int, batch: int, imgsz: int, device: str) -> float:
    import torch  # noqa: PLC0415

    from worker.models import load  # noqa: PLC0415

    torch.set_num_threads(threads)
    m = load(model, allow_path=True)
    opts = {"imgsz": imgsz, "conf": 0.25, "device": device, "verbose": False}
    if device.startswith("cuda"):
        opts["quantize"] = 16  # FP16, as the worker runs on CUDA
    m.predict(frames[:batch], **opts)  # warm-up
    # The worker detects on JPEG-decoded frames; give the direct loop the same pixels.
    t0 = time.perf_counter()
    for i in range(0, len(frames), batch):
        m.predict(frames[i : i + batch], **opts)
    return len(frames) / (time.perf_counter() - t0)


def enqueue_all(client, frames, stream: str, batch: int, imgsz: int, model: str) -> dict[str, float]:
    settings = ProducerSettings(
        stream=stream,
        source="bench",
        batch_size=batch,
        imgsz=imgsz,
        model=model,
        queue_bound=10**6,
        redis_url="redis://unused",
    )
    sink = BatchSink(client, settings)
    sink.register()
    t_jpeg = t_push = 0.0
    for i in range(0, len(frames), batch):
        t0 = time.perf_counter()
        encoded = [encode_frame(f, seq=0, t_capture=time.time(), imgsz=imgsz) for f in frames[i : i + batch]]
        t1 = time.perf_counter()
        sink.push(encoded)
        t_push += time.perf_counter() - t1
        t_jpeg += t1 - t0
    n = len(frames)
    return {"jpeg_encode_ms": 1000 * t_jpeg / n, "enqueue_ms": 1000 * t_push / n}


def decode_costs(frames: list[np.ndarray], batch: int, imgsz: int) -> dict[str, float]:
    """Worker-side costs that need no Redis: msgpack decode of a batch and JPEG decode per frame."""
    encoded = [encode_frame(f, seq=i, t_capture=0.0, imgsz=imgsz) for i, f in enumerate(frames)]
    blobs = [
        encode_batch(
            Batch(stream="b", batch=i, model="m", conf=0.25, imgsz=imgsz, t_enqueue=0.0, frames=encoded[i : i + batch])
        )
        for i in range(0, len(encoded), batch)
    ]
    t0 = time.perf_counter()
    decoded = [decode_batch(b) for b in blobs]
    t1 = time.perf_counter()
    for b in decoded:
        for f in b.frames:
            decode_frame(f)
    t2 = time.perf_counter()
    n = len(frames)
    return {
        "msgpack_decode_ms": 1000 * (t1 - t0) / n,
        "jpeg_decode_ms": 1000 * (t2 - t1) / n,
        "jpeg_bytes": sum(len(f.data) for f in encoded) / n,
    }


def run_workers(client, url: str, stream: str, n: int, *args: str, on_start=None) -> None:
    """Run n workers over the queued stream, all starting at the same moment (the fleet is held
    with `rq suspend` until every worker has its model loaded), until every frame is accounted for.
    `on_start()` is called just before the fleet is let go."""
    env = dict(os.environ, RTAI_REDIS_URL=url)
    client.set(keys.RQ_SUSPENDED, 1)
    procs = [subprocess.Popen(role_command("control", "worker", *args), env=env, cwd=ROOT) for _ in range(n)]
    try:
        wait_for(
            lambda: sum(bool(client.exists(keys.worker_alive(w.decode()))) for w in client.smembers(keys.WORKERS)) >= n,
            timeout=180,
            what="workers",
        )
        if on_start is not None:
            on_start()
        client.delete(keys.RQ_SUSPENDED)
        wait_for(
            lambda: ledger.read(client, stream)["in_flight"] == 0, timeout=600, interval=0.1, what="the queue to drain"
        )
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        client.delete(keys.WORKERS)


def drained_fps(client, stream: str) -> float:
    results = [decode_result(f[b"r"]) for _id, f in client.xrange(keys.history(stream))]
    t0 = min(r.t_start for r in results)
    t1 = max(r.t_done for r in results)
    counts = ledger.read(client, stream)
    assert counts["in_flight"] == 0 and counts["published"] == len(results), counts
    return len(results) / (t1 - t0)


@click.command()
@click.option("--frames", "n", default=400, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--batch-size", default=4, show_default=True)
@click.option("--imgsz", default=320, show_default=True)
@click.option("--model", default="rtai-shapes", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda:0 (FP16 on CUDA).")
@click.option("--workers", default=1, show_default=True, help="Fleet workers (on the same device).")
@click.option(
    "--engine",
    type=click.Choice(["auto", "ultralytics", "torch", "onnx"]),
    default="auto",
    show_default=True,
    help="The fleet workers' --engine; onnx exports the model first (imgsz, batch 8) into RTAI_WEIGHTS_DIR.",
)
def main(n: int, threads: int, batch_size: int, imgsz: int, model: str, device: str, workers: int, engine: str) -> None:
    if engine == "onnx":
        from worker import engine_cache  # noqa: PLC0415

        os.environ.setdefault("RTAI_WEIGHTS_DIR", tempfile.mkdtemp(prefix="rtai-bench-weights-"))
        engine_cache.export(model, "onnx", half=False, batch=8, imgsz=imgsz)
    frames = load_frames(n)
    worker_side = decode_costs(frames, batch_size, imgsz)
    jpeg_frames = [decode_frame(encode_frame(f, seq=0, t_capture=0, imgsz=imgsz)) for f in frames]
    server = PrivateRedis()
    try:
        client = connect(server.url)
        direct_fps = direct(jpeg_frames, model, threads, batch_size, imgsz, device)

        costs = enqueue_all(client, frames, "noop", batch_size, imgsz, model)
        run_workers(client, server.url, "noop", 1, "--detector", "noop", "--preload", "")
        noop_fps = drained_fps(client, "noop")

        enqueue_all(client, frames, "yolo", batch_size, imgsz, model)
        run_workers(
            client,
            server.url,
            "yolo",
            workers,
            *("--threads", str(threads), "--device", device, "--preload", model, "--engine", engine),
            *("--max-frame-age-ms", str(QUEUED_FRAME_AGE_MS)),
        )
        fleet_fps = drained_fps(client, "yolo")
    finally:
        server.stop()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "frames": n,
        "batch_size": batch_size,
        "imgsz": imgsz,
        "threads": threads,
        "model": model,
        "device": device,
        "fleet_workers": workers,
        "fleet_engine": engine,
        "direct_fps": round(direct_fps, 1),
        "fleet_fps": round(fleet_fps, 1),
        "efficiency": round(fleet_fps / direct_fps, 3),
        "noop_fps": round(noop_fps, 1),
        "worker_overhead_ms_per_frame": round(1000 / noop_fps, 2),
        "fleet_minus_direct_ms_per_frame": round(1000 / fleet_fps - 1000 / direct_fps, 2),
        "producer_jpeg_encode_ms_per_frame": round(costs["jpeg_encode_ms"], 2),
        "producer_enqueue_ms_per_frame": round(costs["enqueue_ms"], 2),
        "worker_msgpack_decode_ms_per_frame": round(worker_side["msgpack_decode_ms"], 3),
        "worker_jpeg_decode_ms_per_frame": round(worker_side["jpeg_decode_ms"], 3),
        "worker_redis_rq_publish_ms_per_frame": round(
            1000 / noop_fps - worker_side["msgpack_decode_ms"] - worker_side["jpeg_decode_ms"], 2
        ),
        "jpeg_bytes_per_frame": round(worker_side["jpeg_bytes"]),
    }
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
