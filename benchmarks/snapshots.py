"""Snapshot bytes per stream-hour under the cap: one stream's hour of frames (results + the JPEGs a worker
keeps) fed as fast as the tracking stage takes them, with objects bouncing across a zone and a line so that
events come often; what Redis holds in kept snapshots at the end (the hour's TTL has not run out, so that is
the most an hour keeps), beside what the same hour kept without a cap (every event frame's snapshot).

A worker's pending snapshots (every frame's JPEG for SNAPSHOT_PENDING_TTL_S) would expire after 60 s in a
real hour; here the un-kept ones are deleted after each chunk, and the pending window is reported apart:
fps x 60 s x the JPEG's size.

    .venv/bin/python -m benchmarks.snapshots [--fps 2 --width 320 --height 240 --minutes 60]
"""

from __future__ import annotations

import json
import os
import time

import click
import cv2
import numpy as np

from analytics.stage import TrackingStage
from common import desired, keys
from common.analytics_settings import DEFAULT_SNAPSHOT_MAX_BYTES, DEFAULT_SNAPSHOT_MAX_COUNT
from common.config import ProducerSettings
from common.redis_client import connect
from common.wire import Frame
from control.redis_server import PrivateRedis
from devkit.results import encoded_result
from worker.snapshots import keep_snapshots

STREAM = "door"
CHUNK = 200


def scene_jpeg(w: int, h: int) -> bytes:
    """A camera-like frame (gradient, texture, noise) as JPEG at quality 90, as a producer sends it."""
    rng = np.random.default_rng(0)
    gx = np.linspace(40, 200, w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, 60, h, dtype=np.float32)[:, None, None]
    img = np.clip(gx + gy + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def boxes_at(f: int, w: int, h: int, n_objects: int) -> list[list[float]]:
    """n objects bouncing left-right at different speeds and heights: they cross the zone and the line often."""
    out = []
    for k in range(n_objects):
        period = 40 + 17 * k
        u = (f % period) / period
        x = (0.05 + 0.9 * (2 * u if u < 0.5 else 2 - 2 * u)) * w
        y = (0.2 + 0.7 * k / max(1, n_objects - 1)) * h
        s = 0.06 * w
        out.append([x - s / 2, y - s, x + s / 2, y, 0.9, 0])
    return out


@click.command()
@click.option("--fps", type=float, default=2.0, show_default=True)
@click.option("--width", type=int, default=320, show_default=True)
@click.option("--height", type=int, default=240, show_default=True)
@click.option("--minutes", type=float, default=60.0, show_default=True, help="Stream time to simulate.")
@click.option("--objects", type=int, default=5, show_default=True)
@click.option("--max-count", type=int, default=DEFAULT_SNAPSHOT_MAX_COUNT, show_default=True)
@click.option("--max-bytes", type=int, default=DEFAULT_SNAPSHOT_MAX_BYTES, show_default=True)
def main(fps: float, width: int, height: int, minutes: float, objects: int, max_count: int, max_bytes: int) -> None:
    n = int(fps * minutes * 60)
    jpeg = scene_jpeg(width, height)
    server = PrivateRedis()
    try:
        client = connect(server.url)
        analytics = {
            "track": {"reorder_wait_s": 0.0},
            "zones": [{"name": "middle", "points": [[0.3, 0.0], [0.7, 0.0], [0.7, 1.0], [0.3, 1.0]]}],
            "lines": [{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}],
            "snapshots": True,
            "snapshot_max_count": max_count,
            "snapshot_max_bytes": max_bytes,
        }
        desired.put(client, ProducerSettings(stream=STREAM, source="demo", analytics=analytics))
        stage = TrackingStage.from_url(server.url)
        stage.claim_tick()
        t0 = time.monotonic()
        for first in range(0, n, CHUNK):
            seqs = range(first, min(n, first + CHUNK))
            results = [encoded_result(STREAM, s, boxes_at(s, width, height, objects), w=width, h=height, model="m")
                       for s in seqs]  # fmt: skip
            frames = [Frame(seq=s, t_capture=0.0, w=width, h=height, enc="jpeg", dw=width, dh=height, data=jpeg)
                      for s in seqs]  # fmt: skip
            keep_snapshots(client, STREAM, frames, results)
            with client.pipeline(transaction=False) as pipe:
                for r in results:
                    pipe.xadd(keys.history(STREAM), {"r": r})
                pipe.execute()
            while int(client.hget(keys.track_stats(STREAM), "tracked") or 0) < seqs[-1] + 1:
                stage.step()
            # the worker's pending snapshots of this chunk that no event kept would expire within 60 s
            with client.pipeline(transaction=False) as pipe:
                for s in seqs:
                    pipe.ttl(keys.snapshot(STREAM, s))
                ttls = pipe.execute()
            stale = [
                keys.snapshot(STREAM, s)
                for s, t in zip(seqs, ttls, strict=True)
                if 0 <= t <= keys.SNAPSHOT_PENDING_TTL_S
            ]
            if stale:
                client.delete(*stale)
        wall = time.monotonic() - t0
        stats = {k.decode(): int(v) for k, v in client.hgetall(keys.track_stats(STREAM)).items()}
        kept_keys = [k for k in client.scan_iter(match=keys.snapshot(STREAM, 0)[:-1] + "*", count=1000)]
        kept_bytes = sum(int(client.strlen(k)) for k in kept_keys)
        size = int(client.strlen(kept_keys[0])) if kept_keys else len(jpeg)
        wanted = stats.get("snapshots_kept", 0) + stats.get("snapshots_refused", 0)
        hours = minutes / 60
        report = {
            "stream": f"{width}x{height} at {fps:g} fps, {minutes:g} min simulated ({n} frames, {objects} objects)",
            "caps": {"max_count": max_count, "max_bytes": max_bytes},
            "snapshot_bytes_each": size,
            "events": stats.get("events", 0),
            "event_frames_wanting_a_snapshot": wanted,
            "kept": len(kept_keys),
            "kept_bytes": kept_bytes,
            "kept_mib_at_end": round(kept_bytes / 2**20, 2),  # with --minutes 60: snapshot MiB per stream-hour
            "refused": stats.get("snapshots_refused", 0),
            "uncapped_mib_per_stream_hour": round(wanted * size / 2**20 / hours, 2),
            "pending_window_mib": round(fps * keys.SNAPSHOT_PENDING_TTL_S * size / 2**20, 2),
            "wall_s": round(wall, 1),
            "load": os.getloadavg(),
        }
        click.echo(json.dumps(report, indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
