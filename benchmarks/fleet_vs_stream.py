"""Glass-to-result latency and results/s: the fleet against Ultralytics' stream mode, live RTSP.

One GStreamer RTSP server serves a 640x480@30 H.264 stream whose frames carry their wall time
burnt into the pixels (`scripts/rtsp_server.py --stamp`, read back by devkit/stamp.py). Both
sides read the same stream N times (N = 1 or 4 "cameras"), with the same model and imgsz:

  ultralytics  `YOLO(model).predict(source=<.streams file>, stream=True)` in one process; latency
               = time a result is yielded - the stamp of its frame (orig_img). Run with its own
               thread handling (it resets torch to cpu_count - 1) and with torch held at the cores
               available; the better of the two is compared.
  fleet        one `rtai worker` and N `rtai producer`s with their defaults; latency = the
               result's t_done - t_capture (both Redis time) + the producer's stamp-to-read
               delay, measured by a tap (a producer VideoSource reading the same stream first).

Cases run round-robin (side by side for each case), `--reps` times, and one table is printed.
`--fleet FLAGS` (repeatable) runs the fleet once per set of producer flags in each case, e.g.
`--fleet "--max-fps 10" --fleet "--max-fps 30"` (default: one run with the producer's defaults);
worker flags go after a `|`: `--fleet "| --prefetch off" --fleet "| --prefetch detect"`.

  .venv/bin/python -m benchmarks.fleet_vs_stream --seconds 20 --reps 1
"""

from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from common import keys, ledger
from common.config import role_command
from common.redis_client import connect
from common.wire import decode_result
from control.redis_server import PrivateRedis
from devkit.procs import stop_all
from devkit.stamp import read_stamp
from tests.helpers import free_port, wait_for
from worker.threads import available_cores

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def start_stamp_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(ROOT / "scripts" / "rtsp_server.py"), "--stamp", "--port", str(port), "--fps", "30",
         "--width", "640", "--height", "480", "--bitrate", "3000"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"RTSP server did not start: {line}")
    return proc, line.split()[1]


def tap_delay_ms(url: str, frames: int = 90) -> float:
    """The producer's stamp-to-read delay on this stream (its VideoSource, its capture options)."""
    from producer.source import VideoSource  # noqa: PLC0415

    src = VideoSource(url).start()
    delays, last = [], -1
    try:
        while len(delays) < frames:
            f = src.newest(last, timeout=5)
            if f is None:
                break
            last = f.index
            stamp = read_stamp(f.image)
            if stamp is not None and f.index > 15:
                delays.append(f.t_capture * 1000 - stamp)
    finally:
        src.stop()
    return statistics.median(delays)


ULTRA_CHILD = r"""
import sys, time, json, os
from ultralytics import YOLO
from devkit.stamp import read_stamp
src, imgsz, seconds, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if hold:
    from worker.threads import hold as hold_threads
    hold_threads(hold)
from worker.models import load
model = load("rtai-shapes")
import torch
lat, n, t0, threads = [], 0, None, None
for r in model.predict(source=src, stream=True, imgsz=imgsz, verbose=False):
    now = time.time() * 1000
    threads = torch.get_num_threads()
    if t0 is None:
        t0 = time.monotonic()  # from the first result: model warm, streams open
        continue
    s = read_stamp(r.orig_img)
    if s is not None:
        lat.append(now - s)
    n += 1
    if time.monotonic() - t0 >= seconds:
        break
print(json.dumps({"n": n, "secs": time.monotonic() - t0, "lat": lat, "threads": threads}), flush=True)
os._exit(0)
"""


def run_ultralytics(url: str, streams: int, imgsz: int, seconds: float, hold: int) -> dict:
    import json  # noqa: PLC0415

    with tempfile.NamedTemporaryFile("w", suffix=".streams", delete=False) as f:
        f.write("\n".join([url] * streams) + "\n")
    src = f.name if streams > 1 else url
    env = dict(os.environ, YOLO_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", ULTRA_CHILD, src, str(imgsz), str(seconds), str(hold)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=seconds + 120,
    )  # fmt: skip
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"ultralytics run failed:\n{out.stderr[-3000:]}")
    d = json.loads(lines[-1])
    return {"fps": d["n"] / d["secs"], "lat": d["lat"], "threads": d["threads"]}


def _spawn(url: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, RTAI_REDIS_URL=url)
    return subprocess.Popen(role_command("control", *args), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def run_fleet(
    server: PrivateRedis, url: str, streams: int, imgsz: int, seconds: float, tap_ms: float, flags: str = ""
) -> dict:
    client = connect(server.url)
    client.flushall()
    producer_flags, _, worker_flags = flags.partition("|")
    worker = _spawn(server.url, "worker", "--name", "bench-w", *shlex.split(worker_flags))
    names = [f"cam{i}" for i in range(streams)]
    procs = []
    try:
        wait_for(lambda: client.exists(keys.worker_alive("bench-w")), timeout=120, what="the worker")
        extra = shlex.split(producer_flags)
        procs = [
            _spawn(server.url, "producer", "--source", url, "--stream", s, "--imgsz", str(imgsz), *extra) for s in names
        ]
        wait_for(lambda: all(ledger.read(client, s)["published"] >= 3 for s in names), timeout=60, what="results")
        t0 = client.time()
        t0 = t0[0] + t0[1] / 1e6
        time.sleep(seconds)
        t1 = client.time()
        t1 = t1[0] + t1[1] / 1e6
        per_stream, lat = {}, []
        for s in names:
            res = [decode_result(f[b"r"]) for _id, f in client.xrange(keys.history(s))]
            res = [r for r in res if t0 <= r.t_done < t1]
            per_stream[s] = len(res) / (t1 - t0)
            lat += [(r.t_done - r.t_capture) * 1000 + tap_ms for r in res]
        threads = client.hget(keys.worker("bench-w"), "torch_threads")
        dropped = sum(ledger.read(client, s)["dropped_backpressure"] for s in names)
        stale = sum(ledger.read(client, s)["dropped_stale"] for s in names)
    finally:
        stop_all([*procs, worker])
    fps = sum(per_stream.values())
    share = [v / (fps / streams) for v in per_stream.values()] if fps else [0]
    return {
        "fps": fps,
        "lat": lat,
        "threads": int(threads) if threads else None,
        "skipped": dropped,
        "stale": stale,
        "fair": (min(share), max(share)),
    }


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


@click.command()
@click.option("--seconds", default=20.0, show_default=True, help="Measuring window of each run.")
@click.option("--reps", default=1, show_default=True, help="Round-robin repetitions.")
@click.option("--streams", "stream_counts", default="1,4", show_default=True)
@click.option("--imgsz", "sizes", default="320,640", show_default=True)
@click.option("--export", is_flag=True, help="Export the model to ONNX first, as `rtai up` does on a CPU host.")
@click.option(
    "--fleet",
    "fleets",
    multiple=True,
    help="A fleet variant (repeatable): 'PRODUCER FLAGS' or 'PRODUCER FLAGS | WORKER FLAGS'.",
)
def main(seconds: float, reps: int, stream_counts: str, sizes: str, export: bool, fleets: tuple[str, ...]) -> None:
    if export:
        weights = tempfile.mkdtemp(prefix="rtai-bench-weights-")
        os.environ["RTAI_WEIGHTS_DIR"] = weights  # the workers _spawn starts inherit it
        for imgsz in sizes.split(","):
            cmd = role_command("control", "models", "export", "rtai-shapes", "--format", "onnx", "--imgsz", imgsz)
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    rtsp, url = start_stamp_server()
    server = PrivateRedis()
    rows = []
    try:
        tap = tap_delay_ms(url)
        cores = available_cores()
        for rep in range(reps):
            for imgsz in (int(x) for x in sizes.split(",")):
                for n in (int(x) for x in stream_counts.split(",")):
                    u = max(
                        (run_ultralytics(url, n, imgsz, seconds, hold) for hold in (0, cores)),
                        key=lambda d: d["fps"],
                    )
                    for flags in fleets or ("",):
                        f = run_fleet(server, url, n, imgsz, seconds, tap, flags)
                        rows.append((rep, n, imgsz, flags, u, f))
                        click.echo(
                            f"rep {rep} streams {n} imgsz {imgsz}: ultralytics {u['fps']:.1f}/s p50 "
                            f"{pct(u['lat'], 0.5):.0f} ms; fleet [{flags}] {f['fps']:.1f}/s p50 "
                            f"{pct(f['lat'], 0.5):.0f} ms",
                            err=True,
                        )
    finally:
        server.stop()
        rtsp.terminate()
    load = os.getloadavg()
    engine = "ONNX export (as rtai up)" if export else "the worker's default"
    click.echo(f"stamp-to-read delay (producer tap): {tap:.0f} ms; cores {cores}; load {load[0]:.2f}; fleet: {engine}")
    hdr = "| rep | streams | imgsz | fleet flags | ultra res/s | ultra p50/p95 ms (thr) | fleet res/s "
    click.echo(hdr + "| fleet p50/p95 ms (thr) | res/s ratio | p50 ratio | fleet skipped/stale | fairness min..max |")
    click.echo("|" + "---|" * 12)
    for rep, n, imgsz, flags, u, f in rows:
        click.echo(
            f"| {rep} | {n} | {imgsz} | {flags or 'defaults'} | {u['fps']:.1f} | "
            f"{pct(u['lat'], 0.5):.0f}/{pct(u['lat'], 0.95):.0f} "
            f"({u['threads']}) | {f['fps']:.1f} | {pct(f['lat'], 0.5):.0f}/{pct(f['lat'], 0.95):.0f} "
            f"({f['threads']}) | {f['fps'] / u['fps']:.2f} | {pct(f['lat'], 0.5) / pct(u['lat'], 0.5):.2f} "
            f"| {f['skipped']}/{f['stale']} | {f['fair'][0]:.2f}..{f['fair'][1]:.2f} |"
        )


if __name__ == "__main__":
    main()
