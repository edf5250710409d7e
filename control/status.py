"""One picture of the fleet from Redis: streams, ledgers, queues, latency, workers."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import redis

from common import desired, keys, ledger
from common.clock import SKEW_WARN_S
from common.errors import SchemaError
from common.redis_client import describe
from common.replies import text, text_map
from common.shards import Shards
from common.sources import redact, redact_text
from common.wire import decode_result

#: Latency percentiles come from at most this many most recent results per stream...
LATENCY_WINDOW = 500
#: ... done within this many seconds of the newest one: p99 tells how the stream is now, not since start.
RECENT_S = 10.0


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (0..100) as one of the values (nearest rank); None without values."""
    if not values:
        return None
    return float(np.percentile(values, p, method="nearest"))


def latency(client: redis.Redis, stream: str) -> dict[str, Any]:
    entries = client.xrevrange(keys.history(stream), count=LATENCY_WINDOW) or []
    lat: list[float] = []
    done: list[float] = []
    for _id, fields in entries:
        if not fields:
            continue
        try:
            r = decode_result(fields[b"r"])
        except (SchemaError, KeyError):
            continue
        if done and r.t_done < done[0] - RECENT_S:
            break  # newest first: the rest are older still
        lat.append(r.latency_ms)
        done.append(r.t_done)
    fps_out = (len(done) - 1) / (max(done) - min(done)) if len(done) > 1 and max(done) > min(done) else 0.0
    return {
        "latency_ms": {f"p{p}": (round(v, 1) if (v := percentile(lat, p)) is not None else None) for p in (50, 95, 99)},
        "fps_out": round(fps_out, 2),
        "samples": len(lat),
    }


#: A worker's counters: summed over the shards it serves.
WORKER_COUNTS = ("frames", "published", "failed", "dropped_stale", "batches", "rejected")


def collect(source: redis.Redis | Shards) -> dict[str, Any]:
    """The fleet from one Redis, or from every shard of a sharded fleet as one fleet: each stream
    read from its shard, each worker's counters summed over the shards it serves. A shard that does
    not answer is listed under `shards` with its error, and its streams show state `unknown`."""
    shards = source if isinstance(source, Shards) else None
    home = shards.home if shards is not None else cast(redis.Redis, source)
    places = [(0, home)] if shards is None else list(shards.clients())
    declared = set(desired.streams(home))
    listed: dict[str, int] = {}
    down: dict[int, str] = {}
    for i, client in places:
        try:
            for raw in client.smembers(keys.STREAMS):
                listed[text(raw)] = i
        except redis.RedisError as exc:
            down[i] = describe(exc)
    streams = {}
    for sid in sorted(set(listed) | declared):
        where = shards.index_for(sid) if shards is not None else 0
        if where in down:
            streams[sid] = _unknown(sid, where, down[where])
            continue
        try:
            entry = _stream(home, places[where][1], sid, sid in declared)
        except redis.RedisError as exc:
            down[where] = describe(exc)
            entry = _unknown(sid, where, down[where])
        if entry is not None:
            streams[sid] = {**entry, "shard": where} if shards is not None and shards.sharded else entry
    workers: dict[str, dict[str, Any]] = {}
    fleet: dict[str, int] = {}
    for i, client in places:
        if i in down:
            continue
        try:
            _add_workers(client, workers)
            for k, v in text_map(client.hgetall(keys.FLEET)).items():
                fleet[k] = fleet.get(k, 0) + int(v)
        except redis.RedisError as exc:
            down[i] = describe(exc)
    report: dict[str, Any] = {"streams": streams, "workers": dict(sorted(workers.items())), "fleet": fleet}
    if shards is not None and shards.sharded:
        report["shards"] = [
            {"shard": i, "id": shards.ids[i], "up": i not in down, "error": down.get(i, "")} for i in range(len(shards))
        ]
    return report


def _stream(home: redis.Redis, client: redis.Redis, sid: str, is_declared: bool) -> dict[str, Any] | None:
    info = text_map(client.hgetall(keys.stream(sid)))
    counts = ledger.read(client, sid)
    if not is_declared and desired.is_removed(client, sid) and counts["in_flight"] == 0:
        return None  # removed, and every frame accounted for: it leaves the views
    state, reason = info.get("state", "pending"), info.get("reason", "")
    # Declared, and no daemon runs it (a worker's `error`, e.g. a missing model, says more: it stays).
    if is_declared and state != "error" and (why := desired.unclaimed_reason(home, sid)):
        state, reason = why.split(":", 1)[0], why
    return {
        "state": state,
        "reason": redact_text(reason),
        "source": redact(info.get("source", "")),
        "model": info.get("model", ""),
        "queue_depth": client.llen(keys.queue_key(sid)),
        "clock_offset_s": float(info.get("clock_offset_s") or 0.0),
        "ledger": counts,
        **latency(client, sid),
    }


def _unknown(sid: str, shard: int, error: str) -> dict[str, Any]:
    """A stream whose shard does not answer: nothing about it can be read now."""
    return {
        "state": "unknown",
        "reason": f"its Redis shard {shard} does not answer: {error}",
        "source": "",
        "model": "",
        "queue_depth": 0,
        "clock_offset_s": 0.0,
        "ledger": ledger.read_empty(),
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "fps_out": 0.0,
        "samples": 0,
        "shard": shard,
    }


def _add_workers(client: redis.Redis, workers: dict[str, dict[str, Any]]) -> None:
    """The workers registered on one shard, merged into `workers`: counters and rates summed; the
    first shard's record gives the rest (device, GPU stats); alive and busy on any shard counts."""
    for raw in sorted(client.smembers(keys.WORKERS)):
        name = text(raw)
        w: dict[str, Any] = text_map(client.hgetall(keys.worker(name)))
        if not w:
            continue
        w["alive"] = bool(client.exists(keys.worker_alive(name)))
        for field in WORKER_COUNTS:
            w[field] = int(w.get(field, 0))
        seen = workers.get(name)
        if seen is None:
            workers[name] = w
            continue
        for field in WORKER_COUNTS:
            seen[field] += w[field]
        seen["fps"] = str(round(float(seen.get("fps") or 0) + float(w.get("fps") or 0), 2))
        seen["alive"] = seen["alive"] or w["alive"]
        if w.get("state") == "busy":
            seen["state"] = "busy"


def _skew(offset: float) -> str:
    """offset = Redis time - host time."""
    side = "behind" if offset > 0 else "ahead of"
    return f"{abs(offset):.1f} s {side} Redis' clock (times are corrected; keep hosts NTP-synced)"


def render(report: dict[str, Any]) -> str:
    lines = ["STREAM           STATE         PROD    PUB  DROP  FAIL  FLIGHT  QUEUE  FPS_OUT  P50ms  P99ms"]
    for sid, s in report["streams"].items():
        led = s["ledger"]
        dropped = ledger.dropped(led)
        lat = s["latency_ms"]
        lines.append(
            f"{sid:<16} {s['state']:<12} {led['produced']:>6} {led['published']:>6} {dropped:>5} "
            f"{led['failed']:>5} {led['in_flight']:>7} {s['queue_depth']:>6} {s['fps_out']:>8} "
            f"{lat['p50'] if lat['p50'] is not None else '-':>6} {lat['p99'] if lat['p99'] is not None else '-':>6}"
        )
        if s["reason"]:
            lines.append(f"  reason: {s['reason']}")
        if led.get("skipped_static"):
            share = 100 * led["skipped_static"] / max(1, led["produced"])
            lines.append(f"  motion gating: {led['skipped_static']} static frames held back ({share:.0f} %)")
        if abs(s.get("clock_offset_s", 0.0)) > SKEW_WARN_S:
            lines.append(f"  clock: the producer's host is {_skew(s['clock_offset_s'])}")
    lines.append("")
    lines.append("WORKER                                   DEVICE   STATE    ALIVE  FRAMES   FPS  FAILED")
    for name, w in report["workers"].items():
        lines.append(
            f"{name:<40} {w.get('device', '?'):<8} {w.get('state', '?'):<8} {'yes' if w['alive'] else 'no':<6}"
            f"{w['frames']:>7} {w.get('fps', '0'):>5} {w['failed']:>7}"
        )
        if w.get("reason"):
            lines.append(f"  reason: {w['reason']}")
        if w.get("engines"):
            lines.append(f"  engines: {w['engines']}")
    for name, w in report["workers"].items():
        offset = float(w.get("clock_offset_s") or 0.0)
        if abs(offset) > SKEW_WARN_S:
            lines.append(f"  clock: {name}'s host is {_skew(offset)}")
    gpus = [(n, w) for n, w in report["workers"].items() if w.get("gpu", "cpu") != "cpu"]
    if gpus:
        lines.append("")
        lines.append("GPU  NAME                      UTIL%  MEM_USED/TOTAL_MB  TEMP_C  POWER_W  WORKER")
        for name, w in gpus:
            lines.append(
                f"{w['gpu']:<4} {w.get('gpu_name', '?')[:25]:<25} {w.get('gpu_utilization_pct', '-'):>5} "
                f"{w.get('gpu_memory_used_mb', '-'):>8}/{w.get('gpu_memory_total_mb', '-'):<8} "
                f"{w.get('gpu_temperature_c', '-'):>7} {w.get('gpu_power_w', '-'):>8}  {name}"
            )
    if report["fleet"]:
        lines.append("")
        lines.append("fleet: " + ", ".join(f"{k}={v}" for k, v in report["fleet"].items()))
    if report.get("shards"):
        lines.append("")
        lines.append("SHARD  REDIS                                    STREAMS  UP")
        for sh in report["shards"]:
            held = sum(1 for st in report["streams"].values() if st.get("shard") == sh["shard"])
            up = "yes" if sh["up"] else f"no: {sh['error']}"
            lines.append(f"{sh['shard']:<6} {sh['id'][:40]:<40} {held:>7}  {up}")
    return "\n".join(lines)
