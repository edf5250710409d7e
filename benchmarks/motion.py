"""Motion gating on a quiet clip: inference frames saved, events kept, first detections not delayed (issue 20).

    .venv/bin/python -m benchmarks.motion --seconds 90

Makes a clip with devkit.synth (320x240 at 10 fps: a fixed scene with sensor noise and a frame-index
strip, and `--crossings` shapes crossing one at a time), then runs it through the real fleet twice at
once: `rtai producer` without and with `--motion` (the strip masked, as a camera's clock would be),
one `rtai worker` with the bundled model, and `rtai tracker` with a zone and a line on both streams.
Prints:
- frames sent to inference by each stream (the ledger's `published`) and the reduction;
- the entered/left/crossed events of each (they must be the same) and the other event counts;
- for each crossing, how many sampling ticks later the gated stream first detected the object (the
  frame index is the capture time since the stream's first frame, times the clip's rate);
- each producer's CPU (the motion check's cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import click
import redis

from common import desired, keys, ledger
from common.config import ProducerSettings, role_command
from common.wire import unpackb
from control.redis_server import PrivateRedis
from devkit.synth import barcode_rect, make_quiet_clip

from .cameras import cpu_seconds

FPS = 10
ZONE = {"name": "middle", "points": [[0.35, 0.05], [0.65, 0.05], [0.65, 0.95], [0.35, 0.95]]}
LINE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}
COMPARED = ("entered", "left", "crossed")


def _events(client: redis.Redis, stream: str) -> Counter:
    out: Counter = Counter()
    for _id, f in client.xrange(keys.EVENT_LOG):
        e = json.loads(f[b"e"])
        if e["stream"] == stream:
            out[(e["type"], e.get("class"), e.get("zone") or e.get("line"), e.get("direction"), e.get("why"))] += 1
    return out


def _first_detections(client: redis.Redis, stream: str, crossings: list[tuple[int, int]]) -> list[int | None]:
    """Per crossing (first, last frame with an object), the frame index of the first result with a box."""
    results = sorted((unpackb(f[b"r"]) for _id, f in client.xrange(keys.history(stream))), key=lambda x: x["seq"])
    t0 = results[0]["t_capture"]
    found: list[int | None] = []
    for first, last in crossings:
        hits = [round((x["t_capture"] - t0) * FPS) for x in results if x["boxes"]]
        found.append(next((i for i in hits if first - 1 <= i <= last + 1), None))
    return found


@click.command()
@click.option("--seconds", type=int, default=90, show_default=True, help="Length of the clip.")
@click.option("--crossings", type=int, default=4, show_default=True)
def main(seconds: int, crossings: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="rtai-motion-"))
    clip = root / "quiet.mp4"
    n_frames = seconds * FPS
    truth = make_quiet_clip(clip, seed=11, n_frames=n_frames, fps=FPS, crossings=crossings, speed_px_s=140.0)
    spans, start = [], None
    for i, boxes in enumerate([*truth, []]):
        if boxes and start is None:
            start = i
        elif not boxes and start is not None:
            spans.append((start, i - 1))
            start = None
    server = PrivateRedis()
    env = {**os.environ, "RTAI_REDIS_URL": server.url, "RTAI_MAX_FRAME_AGE_MS": "600000"}
    client = redis.Redis.from_url(server.url)
    analytics = {"track": {}, "zones": [ZONE], "lines": [LINE]}
    for stream in ("plain", "gated"):
        desired.put(client, ProducerSettings(stream=stream, source=str(clip), analytics=analytics))
    common = ["--source", str(clip), "--max-fps", "30", "--imgsz", "320", "--batch-size", "1"]
    common += ["--no-credit-flow", "--queue-bound", "100000"]
    mask = ",".join(f"{v:.3f}" for v in barcode_rect(320, 240))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    helpers = [
        subprocess.Popen(role_command("control", "tracker"), env=env, **quiet),  # type: ignore[call-overload]
        subprocess.Popen(role_command("control", "worker", "--threads", "2"), env=env, **quiet),  # type: ignore[call-overload]
    ]
    cpu: dict[str, float] = {}
    try:
        prods = {
            "plain": subprocess.Popen(role_command("control", "producer", "--stream", "plain", *common), env=env),
            "gated": subprocess.Popen(
                role_command("control", "producer", "--stream", "gated", *common, "--motion-mask", mask), env=env
            ),
        }
        t0 = time.monotonic()
        while any(p.poll() is None for p in prods.values()):
            for name, p in prods.items():
                if p.poll() is None:
                    cpu[name] = cpu_seconds(p.pid)
            time.sleep(0.5)
        wall = time.monotonic() - t0
        for stream in prods:
            while not ledger.balanced(ledger.read(client, stream)):
                time.sleep(0.5)
            n = ledger.read(client, stream)["published"]
            while int(client.hget(keys.track_stats(stream), "tracked") or 0) < n:
                time.sleep(0.5)
        counts = {s: ledger.read(client, s) for s in prods}
        events = {s: _events(client, s) for s in prods}
        firsts = {s: _first_detections(client, s, spans) for s in prods}
    finally:
        for h in helpers:
            h.terminate()
            h.wait(timeout=30)
        server.stop()
    plain, gated = counts["plain"]["published"], counts["gated"]["published"]
    same = {k: v for k, v in events["plain"].items() if k[0] in COMPARED} == {
        k: v for k, v in events["gated"].items() if k[0] in COMPARED
    }
    shown = sum(1 for t in truth if t)
    click.echo(f"clip: {n_frames} frames at {FPS} fps, {len(spans)} crossings, {shown} frames with an object")
    click.echo("| stream | frames to inference | skipped_static | producer cores |")
    click.echo("|---|---|---|---|")
    for s in prods:
        c = counts[s]
        click.echo(f"| {s} | {c['published']} | {c['skipped_static']} | {cpu.get(s, 0) / wall:.3f} |")
    click.echo(f"inference frames reduced by {100 * (1 - gated / plain):.1f} %")
    compared = sum(v for k, v in events["plain"].items() if k[0] in COMPARED)
    click.echo(f"entered/left/crossed events: {compared} ungated, identical with gating: {same}")
    for s in prods:
        others: Counter = Counter()
        for k, v in events[s].items():
            if k[0] not in COMPARED:
                others[k[0]] += v
        click.echo(f"  {s}: other events {dict(others)}")
    delays = [None if g is None or p is None else g - p for p, g in zip(firsts["plain"], firsts["gated"], strict=True)]
    click.echo(f"first detection, gated minus ungated, in frames (ticks) per crossing: {delays}")


if __name__ == "__main__":
    main()
