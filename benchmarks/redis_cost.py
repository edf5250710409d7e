"""What the fleet costs Redis per frame (issue 19, part 3: measure first).

    .venv/bin/python -m benchmarks.redis_cost --frames 960

On a private redis-server, Redis' own CPU (INFO cpu: used_cpu_user + used_cpu_sys, the server's
process) is read before and after each phase:
- enqueue: the producer's path (blob SET, RQ job, ledger, in one MULTI) for the demo frames as
  640x480 JPEG, in batches of 8 and of 1;
- drain: one no-op worker taking those batches (fetch, job records, settle, publish, history),
  from the moment it is let go (its start-up and model load are not counted);
- floor: the least any design must do in the same run: per batch, in one round trip, SET the same
  blob, GET it, DEL it, and PUBLISH + XADD a 200-byte result per frame;
- idle: one worker with no stream, Redis CPU per second over `--idle-s`;
- memory: used_memory per queued frame after the enqueue.
Prints one JSON object, microseconds of Redis CPU per frame, and each phase against the floor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import click
import redis

from common import keys
from common.config import role_command
from common.images import encode_frame
from common.redis_client import connect
from control.redis_server import PrivateRedis

from .fleet_vs_direct import enqueue_all, load_frames, run_workers

RESULT_BYTES = 200
#: The pause before each round trip of the paced floor: about what a no-op worker spends in Python
#: between its own round trips here, so Redis wakes for each request as it does beside the fleet.
PACE_S = 0.001


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Calls and microseconds of Redis CPU per command (INFO commandstats)."""
    out: dict[str, tuple[int, int]] = {}
    for name, row in client.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(row["calls"]), int(row["usec"]))
    return out


def command_delta(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], frames: int) -> dict[str, str]:
    """Per command, calls and Redis CPU µs per frame between two readings, costliest first (a
    command inside a script is counted both as itself and within EVALSHA's time)."""
    rows = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls > c0:
            rows[name] = (round((calls - c0) / frames, 2), round((usec - u0) / frames, 1))
    return {k: f"{c} calls, {u} us" for k, (c, u) in sorted(rows.items(), key=lambda kv: -kv[1][1]) if u >= 0.2}


def commands_per_frame(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], frames: int) -> float:
    """Commands Redis ran per frame, those inside scripts and MULTI included (the benchmark's own
    INFO and CONFIG calls left out): unlike CPU time, the same in every run of the same code."""
    calls = sum(c - before.get(k, (0, 0))[0] for k, (c, _u) in after.items() if not k.startswith(("info", "config")))
    return round(calls / frames, 2)


def reads(client: redis.Redis) -> int:
    """Read events Redis has processed (INFO stats): about one per request a client sends, so the
    round trips (a large blob may take a few)."""
    return int(client.info("stats")["total_reads_processed"])


def _per_frame_us(before: float, after: float, frames: int) -> float:
    return round((after - before) * 1e6 / frames, 1)


def floor_us(client: redis.Redis, blobs: list[bytes], batch: int) -> float:
    """The least per batch, in one round trip: SET, GET and DEL of its blob, and a PUBLISH + XADD of a
    200-byte result per frame."""
    result = b"r" * RESULT_BYTES
    frames = len(blobs) * batch
    t0 = redis_cpu_s(client)
    for i, blob in enumerate(blobs):
        key = f"floor:{i}"
        with client.pipeline(transaction=False) as pipe:
            pipe.set(key, blob)
            pipe.get(key)
            pipe.delete(key)
            for _ in range(batch):
                pipe.publish("floor:results", result)
                pipe.xadd("floor:history", {"r": result}, maxlen=1000, approximate=True)
            pipe.execute()
    return _per_frame_us(t0, redis_cpu_s(client), frames)


def queue_floor_us(client: redis.Redis, blobs: list[bytes], batch: int, pace_s: float = 0.0) -> float:
    """The least any producer -> queue -> worker design asks of Redis: three round trips per batch
    (the producer's push of the blob, the worker's pop of it, and after inference a PUBLISH + XADD
    of a 200-byte result per frame), with no ledger, no job record and no acknowledgement. `pace_s`:
    a pause before each round trip, so Redis sleeps between requests as it does beside a fleet that
    is not saturating it (0: back to back, as `floor_us`)."""
    result = b"r" * RESULT_BYTES
    frames = len(blobs) * batch
    t0 = redis_cpu_s(client)
    for blob in blobs:
        if pace_s:
            time.sleep(pace_s)
        client.rpush("qfloor:queue", blob)
        if pace_s:
            time.sleep(pace_s)
        client.lpop("qfloor:queue")
        if pace_s:
            time.sleep(pace_s)
        with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.publish("qfloor:results", result)
                pipe.xadd("qfloor:history", {"r": result}, maxlen=1000, approximate=True)
            pipe.execute()
    return _per_frame_us(t0, redis_cpu_s(client), frames)


def round_trip_us(client: redis.Redis, n: int = 2000, pace_s: float = 0.0) -> float:
    """Redis CPU per PING: back to back, or with `pace_s` between them (Redis asleep in epoll_wait
    before each, as beside a fleet that does not saturate it: the wake-up is the cost)."""
    t0 = redis_cpu_s(client)
    for _ in range(n):
        if pace_s:
            time.sleep(pace_s)
        client.ping()
    return round((redis_cpu_s(client) - t0) * 1e6 / n, 1)


def warm(client: redis.Redis, blobs: list[bytes]) -> None:
    """Store and free as much memory as a phase will hold, so the phase reuses pages Redis' allocator
    already has, as a fleet at steady state does (its blobs are freed as fast as they are made).
    Without it, the enqueue phase's figure is mostly the kernel's page faults for fresh memory."""
    with client.pipeline(transaction=False) as pipe:
        for i, blob in enumerate(blobs):
            pipe.set(f"warm:{i}", blob)
        pipe.execute()
    client.flushdb()


def idle_per_s(url: str, client: redis.Redis, seconds: float) -> float:
    """Redis CPU seconds per second with one worker running and no stream (its polling alone)."""
    env = dict(os.environ, RTAI_REDIS_URL=url)
    proc = subprocess.Popen(role_command("control", "worker", "--detector", "noop", "--preload", ""), env=env)
    try:
        deadline = time.monotonic() + 120
        while not client.scard(keys.WORKERS) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)
        t0, c0 = time.monotonic(), redis_cpu_s(client)
        time.sleep(seconds)
        return round((redis_cpu_s(client) - c0) / (time.monotonic() - t0), 4)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@click.command()
@click.option("--frames", "n", default=960, show_default=True)
@click.option("--imgsz", default=640, show_default=True)
@click.option("--idle-s", default=10.0, show_default=True)
@click.option("--commands", is_flag=True, help="Also print each command's calls and Redis CPU per frame, per phase.")
def main(n: int, imgsz: int, idle_s: float, commands: bool) -> None:
    frames = load_frames(n)
    server = PrivateRedis()
    report: dict[str, object] = {"frames": n, "imgsz": imgsz}
    try:
        client = connect(server.url)
        for batch in (8, 1):
            client.flushdb()
            stream = f"cost{batch}"
            encoded = [encode_frame(f, seq=i, t_capture=0.0, imgsz=imgsz).data for i, f in enumerate(frames)]
            blobs = [b"".join(encoded[i : i + batch]) for i in range(0, n, batch)]
            warm(client, blobs)
            client.config_resetstat()
            mem0, t0, s0, r0 = (
                int(client.info("memory")["used_memory"]),
                redis_cpu_s(client),
                command_stats(client),
                reads(client),
            )
            enqueue_all(client, frames, stream, batch, imgsz, "rtai-shapes")
            te, mem1, se, re_ = (
                redis_cpu_s(client),
                int(client.info("memory")["used_memory"]),
                command_stats(client),
                reads(client),
            )
            started: dict[str, object] = {}

            def at_start(started: dict[str, object] = started) -> None:
                started.update(cpu=redis_cpu_s(client), stats=command_stats(client), reads=reads(client))

            run_workers(
                client,
                server.url,
                stream,
                1,
                *("--detector", "noop", "--preload", "", "--max-batch-frames", "8"),
                on_start=at_start,
            )
            t1, s1 = float(started["cpu"]), started["stats"]  # the worker's start-up is not the drain's
            t2, s2, r2 = redis_cpu_s(client), command_stats(client), reads(client)
            floor = floor_us(client, blobs, batch)
            queue_floor = queue_floor_us(client, blobs, batch)
            queue_floor_paced = queue_floor_us(client, blobs, batch, PACE_S)
            enqueue, drain = _per_frame_us(t0, te, n), _per_frame_us(t1, t2, n)
            report[f"batches of {batch}"] = {
                "enqueue_us": enqueue,
                "drain_us": drain,
                "total_us": round(enqueue + drain, 1),
                "floor_us": floor,
                "total_over_floor": round((enqueue + drain) / floor, 2),
                "queue_floor_us": queue_floor,
                "total_over_queue_floor": round((enqueue + drain) / queue_floor, 2),
                "queue_floor_paced_us": queue_floor_paced,
                "total_over_queue_floor_paced": round((enqueue + drain) / queue_floor_paced, 2),
                "commands_per_frame": {
                    "enqueue": commands_per_frame(s0, se, n),
                    "drain": commands_per_frame(s1, s2, n),
                },
                "reads_per_frame": {
                    "enqueue": round((re_ - r0) / n, 2),
                    "drain": round((r2 - int(started["reads"])) / n, 2),
                },
                "memory_bytes_per_queued_frame": round((mem1 - mem0) / n),
                "frame_bytes": round(sum(len(e) for e in encoded) / n),
            }
            if commands:
                report[f"commands at batches of {batch}"] = {
                    "enqueue": command_delta(s0, se, n),
                    "drain": command_delta(s1, s2, n),
                }
        client.flushdb()
        report["round_trip_us"] = {
            "back_to_back": round_trip_us(client),
            f"paced_{PACE_S * 1000:g}ms": round_trip_us(client, 1000, PACE_S),
        }
        report["idle_worker_redis_cpu_per_s"] = idle_per_s(server.url, client, idle_s)
    finally:
        server.stop()
    report["load"] = os.getloadavg()
    click.echo(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
