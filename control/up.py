"""`rtai up`: the whole fleet on one machine: Redis (private unless RTAI_REDIS_URL is set), one
worker per GPU (one CPU worker where there is none), a producer per source (the demo clip by
default), and a live status line per stream. Ctrl-C stops it cleanly: producers first, then the
workers once every queued frame is accounted for, then the private Redis.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis

from common import desired, gpu, ledger, parentdeath
from common.config import (
    DEFAULT_IMGSZ,
    DEFAULT_MODEL,
    DEMO_SOURCE,
    child_env,
    explicit_redis_url,
    remove_run_file,
    role_command,
    write_run_file,
)
from common.errors import RedisUnavailableError
from common.redis_client import connect, describe
from common.shards import GIVE_UP_S, Shards
from common.sources import redact

from . import status
from .redis_server import PrivateRedis
from .subscriber import ClassNames, Subscriber

#: After the producers stop, workers get this long to drain the queues before they are stopped.
DRAIN_TIMEOUT_S = 30.0
#: Exporting the model to ONNX on a CPU host (once; cached) takes ~10 s on 2 cores.
EXPORT_TIMEOUT_S = 300.0
STATUS_EVERY_S = 2.0
#: The final report waits this long for a Redis that does not answer (a Sentinel failover takes ~2 s).
FINAL_REPORT_WAIT_S = 15.0


@dataclass
class UpOptions:
    sources: list[str]
    model: str | None = None
    imgsz: int | None = None
    max_fps: float | None = None
    batch_size: int | None = None
    device: str = "auto"
    workers: int = 1
    threads: int | None = None
    duration: float | None = None
    show: bool = False
    api_port: int | None = None
    export: bool = True


class Fleet:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.private: PrivateRedis | None = None
        self.run_file: Path | None = None
        url = explicit_redis_url()
        if url is None:
            self.private = PrivateRedis(die_with_parent=True)
            url = self.private.url
            self.run_file = write_run_file(url)  # other rtai commands find this Redis by themselves
        self.url = url
        self.client = connect(url)  # the home shard, when RTAI_REDIS_URL names several
        self.shards = Shards.from_url(url, give_up_s=GIVE_UP_S)  # its status lines read every shard
        self.producers: list[subprocess.Popen] = []
        #: Runs what the live view's "Add camera", the REST API and `rtai stream add` declare.
        self.daemon: subprocess.Popen | None = None
        self.api: subprocess.Popen | None = None
        self.workers: subprocess.Popen | None = None
        self.streams: list[str] = []
        self.stop_requested = threading.Event()

    def _spawn(self, args: list[str], **env: str) -> subprocess.Popen:
        """A child on the main thread that dies with us, even when we are SIGKILLed (PR_SET_PDEATHSIG)."""
        return subprocess.Popen(
            role_command("control", *args),
            env=child_env(RTAI_REDIS_URL=self.url, **env),
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=parentdeath.die_with_parent(),
        )

    def start(self) -> list[str]:
        o = self.opts
        wargs = ["worker"]
        device = o.device
        if device == "auto":
            device = "cuda" if gpu.count() > 0 else "cpu"
        if device == "cpu" and o.export:
            self.export_onnx()
        if device == "cuda":
            wargs.append("--all-gpus")
        elif device.startswith("cuda:"):
            wargs += ["--device", device]
        else:
            wargs += ["--workers", str(o.workers)]
            threads = o.threads or max(1, (os.cpu_count() or 2) // o.workers)
            wargs += ["--threads", str(threads)]
        if o.model:
            wargs += ["--preload", o.model]
        self.workers = self._spawn(wargs)
        self.daemon = self._spawn(["producer"], RTAI_SOURCE="")  # no source: a daemon (streams bring their settings)
        if o.api_port is not None:
            self.api = self._spawn(["api", "--port", str(o.api_port)])
        streams = []
        sources = o.sources or [DEMO_SOURCE]
        for i, source in enumerate(sources):
            stream = "demo" if not o.sources else f"cam{i + 1}"
            pargs = ["producer", "--stream", stream]  # the source goes by env: no password in `ps`
            if "://" not in source:  # files (and the demo) loop; cameras are live
                pargs.append("--loop")
            for flag, value in (
                ("--model", o.model),
                ("--imgsz", o.imgsz),
                ("--max-fps", o.max_fps),
                ("--batch-size", o.batch_size),
            ):
                if value is not None:
                    pargs += [flag, str(value)]
            self.producers.append(self._spawn(pargs, RTAI_SOURCE=source))
            streams.append(stream)
        self.streams = streams
        return streams

    def export_onnx(self) -> bool:
        """On a CPU host, export the model to ONNX once (cached in the engine cache): the workers'
        `--engine auto` then runs it with ONNX Runtime, 1.3-2x Ultralytics' predictor per frame
        here (BENCHMARKS.md). A failed export is said and the workers use Ultralytics' predictor."""
        o = self.opts
        model, imgsz = o.model or DEFAULT_MODEL, o.imgsz or DEFAULT_IMGSZ
        cmd = role_command("control", "models", "export", model, "--format", "onnx", "--imgsz", str(imgsz))
        click.echo(f"rtai up: ONNX export of {model} at {imgsz} for the CPU workers (once; --no-export skips)")
        try:
            done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            click.echo(f"rtai up: the export took over {EXPORT_TIMEOUT_S:.0f} s; workers use Ultralytics' predictor")
            return False
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no output"])[-1]
            click.echo(f"rtai up: export failed ({why}); workers use Ultralytics' predictor", err=True)
            return False
        click.echo(f"rtai up: {done.stdout.strip()}")
        return True

    def stop(self) -> None:
        producers = [*self.producers, *([self.daemon] if self.daemon else [])]
        for p in producers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in producers:
            _wait(p, 15)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        every: set[str] | None = None
        while time.monotonic() < deadline and self.workers is not None and self.workers.poll() is None:
            try:  # a Redis that does not answer (a failover) is waited for, up to the drain's deadline
                if every is None:  # the daemon's streams drain too
                    every = set(self.streams) | set(desired.streams(self.client))
                if all(ledger.read(self.shards.for_stream(s), s)["in_flight"] == 0 for s in every):
                    break
            except redis.RedisError:
                pass
            time.sleep(0.1)
        for proc in (self.workers, self.api):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                _wait(proc, 30)

    def close(self) -> None:
        if self.private is not None:
            remove_run_file()
            self.private.stop()


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def status_lines(report: dict[str, Any], previous: dict[str, int], dt: float) -> list[str]:
    lines = []
    for sid, s in report["streams"].items():
        led = s["ledger"]
        fps_in = (led["produced"] - previous.get(sid, led["produced"])) / dt if dt > 0 else 0.0
        previous[sid] = led["produced"]
        lat = s["latency_ms"]
        lines.append(
            f"[{sid}] {s['state']:<12} in {fps_in:5.1f} fps  out {s['fps_out']:5.1f} fps  "
            f"p50 {lat['p50'] or 0:6.0f} ms  p99 {lat['p99'] or 0:6.0f} ms  queue {s['queue_depth']:3d}  "
            f"published {led['published']}  dropped {ledger.dropped(led)}  "
            f"failed {led['failed']}"
        )
    load = ", ".join(f"{n.split(':')[-2]}:{w['frames']}" for n, w in report["workers"].items() if w["alive"])
    lines.append(f"workers: {load or 'starting...'}")
    return lines


def run(opts: UpOptions) -> dict[str, Any]:
    fleet = Fleet(opts)
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    shower = None
    try:
        streams = fleet.start()
        where = "private Redis" if fleet.private else "Redis"
        shown = f"{where} {redact(fleet.url)}"
        click.echo(f"rtai up: {len(streams)} stream(s) {', '.join(streams)} on {shown}; Ctrl-C stops")
        if fleet.run_file is not None:
            click.echo(
                f"rtai up: other rtai commands here use this Redis by themselves (see {fleet.run_file}); "
                f"elsewhere: export RTAI_REDIS_URL={redact(fleet.url)}"
            )
        if opts.api_port is not None:
            click.echo(f"rtai up: REST API on http://127.0.0.1:{opts.api_port}/docs")
            click.echo(f"rtai up: live view on http://127.0.0.1:{opts.api_port}/")
        if opts.show:
            shower = threading.Thread(target=_show, args=(fleet.client, streams, stop), daemon=True)
            shower.start()
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        previous: dict[str, int] = {}
        last = time.monotonic()
        while not stop.wait(
            STATUS_EVERY_S if deadline is None else max(0.0, min(STATUS_EVERY_S, deadline - time.monotonic()))
        ):
            now = time.monotonic()
            current = _collect(fleet.shards)
            if current is not None:
                for line in status_lines(current, previous, now - last):
                    click.echo(line)
                last = now
            if deadline is not None and now >= deadline:
                break
            if fleet.workers is not None and fleet.workers.poll() is not None:
                click.echo("rtai up: the workers exited; stopping", err=True)
                break
        click.echo("rtai up: stopping (producers, then workers once the queues drain)...")
        fleet.stop()
        report = _collect(fleet.shards, wait_s=FINAL_REPORT_WAIT_S)
        if report is None:
            raise RedisUnavailableError(f"no final report: Redis did not answer for {FINAL_REPORT_WAIT_S:.0f} s")
        click.echo(status.render(report))
        return report
    finally:
        stop.set()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for p in [*fleet.producers, fleet.daemon, fleet.workers, fleet.api]:
            if p is not None and p.poll() is None:
                p.kill()
        fleet.close()


def _collect(shards: Shards, *, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The fleet's status; None (said on stderr) while its Redis does not answer (restarting, or a
    Sentinel failover), tried again for up to `wait_s`. The fleet runs on meanwhile: only this
    status line is skipped."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return status.collect(shards)
        except redis.RedisError as exc:
            if time.monotonic() >= deadline:
                click.echo(f"rtai up: no status now: {describe(exc)}", err=True)
                return None
            time.sleep(0.5)


def _show(client: redis.Redis, streams: list[str], stop: threading.Event) -> None:
    sub = Subscriber(client, streams)
    names = ClassNames(sub.class_names)
    try:
        for result in sub.results(deadline=None):
            if stop.is_set():
                return
            click.echo(Subscriber.describe(result, names(result.model)))
    except redis.RedisError:
        return
