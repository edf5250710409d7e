"""Overload, held: more live streams than one CPU worker can carry, for minutes. Latency must stay
bounded (about two inference calls) and flat, with the frames the fleet cannot take counted.

One GStreamer RTSP server (the capture time burnt into each 640x480@30 frame) read by N producers
with their defaults, one `rtai worker` with its defaults. Every window of `--window` seconds prints
results/s, glass-to-result p50/p95 (the result's t_done - t_capture in Redis time, plus the
producer's stamp-to-read delay measured by a tap) and the worker's mean time per detector call in
that window (`infer_ms` / `infer_calls` of its stats hash). The last line compares the last
window's p50 with the first one's and with the mean call time.

  .venv/bin/python -m benchmarks.overload --streams 4 --imgsz 640 --seconds 120
"""

from __future__ import annotations

import os
import subprocess
import time

import click

from common import keys, ledger
from common.redis_client import connect
from common.wire import decode_result
from control.redis_server import PrivateRedis
from devkit.procs import stop_all
from tests.helpers import wait_for

from .fleet_vs_stream import _spawn, pct, start_stamp_server, tap_delay_ms


def _now(client) -> float:
    t = client.time()
    return t[0] + t[1] / 1e6


def _infer(client) -> tuple[int, int, int]:
    h = client.hgetall(keys.worker("bench-w"))
    return tuple(int(h.get(k, 0)) for k in (b"infer_calls", b"infer_frames", b"infer_ms"))  # type: ignore[return-value]


@click.command()
@click.option("--streams", default=4, show_default=True)
@click.option("--imgsz", default=640, show_default=True)
@click.option("--seconds", default=120.0, show_default=True)
@click.option("--window", default=20.0, show_default=True)
def main(streams: int, imgsz: int, seconds: float, window: float) -> None:
    rtsp, url = start_stamp_server()
    server = PrivateRedis()
    client = connect(server.url)
    names = [f"cam{i}" for i in range(streams)]
    procs: list[subprocess.Popen] = []
    rows = []
    try:
        tap = tap_delay_ms(url)
        worker = _spawn(server.url, "worker", "--name", "bench-w")
        procs.append(worker)
        wait_for(lambda: client.exists(keys.worker_alive("bench-w")), timeout=120, what="the worker")
        procs += [_spawn(server.url, "producer", "--source", url, "--stream", s, "--imgsz", str(imgsz)) for s in names]
        wait_for(lambda: all(ledger.read(client, s)["published"] >= 3 for s in names), timeout=90, what="results")
        time.sleep(2.0)  # past the start
        t0, inf0 = _now(client), _infer(client)
        start0, end = t0, t0 + seconds
        while t0 < end:
            t = t0
            time.sleep(window)
            t1, inf1 = _now(client), _infer(client)
            lat = []
            for s in names:
                for _id, f in client.xrange(keys.history(s), min=f"{int(t * 1000)}-0"):
                    r = decode_result(f[b"r"])
                    if t <= r.t_done < t1:
                        lat.append((r.t_done - r.t_capture) * 1000 + tap)
            calls, frames, ms = (b - a for a, b in zip(inf0, inf1, strict=True))
            rows.append((t - start0, len(lat) / (t1 - t), lat, ms / calls if calls else 0.0,
                         frames / calls if calls else 0.0))  # fmt: skip
            w = rows[-1]
            click.echo(f"{w[0]:5.0f} s: {w[1]:.1f} results/s, p50 {pct(lat, 0.5):.0f} ms, call {w[3]:.0f} ms", err=True)
            t0, inf0 = t1, inf1
        led = [ledger.read(client, s) for s in names]
    finally:
        stop_all(procs)
        server.stop()
        rtsp.terminate()
    load = os.getloadavg()
    click.echo(f"{streams} streams @{imgsz}, one worker, defaults; tap {tap:.0f} ms; load {load[0]:.2f}")
    click.echo("| window start | results/s | p50 / p95 ms | mean detector call ms (frames a call) | p50 / call |")
    click.echo("|---|---|---|---|---|")
    for start, fps, lat, call, fpc in rows:
        p50 = pct(lat, 0.5)
        ratio = p50 / call if call else float("nan")
        p95 = pct(lat, 0.95)
        click.echo(f"| {start:.0f} s | {fps:.1f} | {p50:.0f} / {p95:.0f} | {call:.0f} ({fpc:.1f}) | {ratio:.2f} |")
    produced = sum(x["produced"] for x in led)
    published = sum(x["published"] for x in led)
    skipped = sum(x["dropped_backpressure"] for x in led)
    stale = sum(x["dropped_stale"] for x in led)
    first, last = pct(rows[0][2], 0.5), pct(rows[-1][2], 0.5)
    click.echo(
        f"p50 last/first window {last / first:.2f}; produced {produced}, published {published}, "
        f"skipped at the source {skipped}, stale {stale}"
    )


if __name__ == "__main__":
    main()
