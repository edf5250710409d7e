"""Desired state: which streams the fleet should run, and with what settings.

Written by `rtai stream add` and the REST API, read by producer daemons, which claim each stream
with a renewed lease so that exactly one producer runs it and another takes over when it dies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import yaml

from . import keys, scripts
from .config import ProducerSettings
from .errors import ConfigError, RedisUnavailableError, SchemaError
from .redis_client import describe
from .replies import texts
from .wire import packb, unpackb

#: The client of the shard that holds a stream's keys (common/shards.Shards.for_stream).
DataFor = Callable[[str], redis.Redis]

#: Settings that belong to the producer process, not to the stream's desired state.
PROCESS_FIELDS = {"redis_url"}


#: Add a stream to the desired set unless the set already holds `cap` others (an update is free).


def reserve(client: redis.Redis, stream: str, cap: int) -> bool:
    """Take a place for `stream` among at most `cap` declared streams; False when none is left."""
    return bool(client.eval(scripts.RESERVE.source, 1, keys.DESIRED, keys.check_stream_id(stream), cap))


def put(
    client: redis.Redis,
    settings: ProducerSettings,
    extra: dict[str, Any] | None = None,
    *,
    data: redis.Redis | None = None,
) -> None:
    """Declare (or update) a stream the fleet should run. `client`: the home shard (desired
    state); `data`: the stream's shard when the fleet has several (common/shards.py)."""
    stream = keys.check_stream_id(settings.stream)
    if data is not None:  # the stream's shard first: one that does not answer leaves nothing declared
        _on_shard(data, stream, _revive, "stream {stream} not declared: its Redis shard does not answer ({why})")
    with client.pipeline() as pipe:
        _put(pipe, stream, settings, extra)
        if data is None:
            _revive(pipe, stream)
        pipe.execute()


def _put(pipe: Any, stream: str, settings: ProducerSettings, extra: dict[str, Any] | None) -> None:
    data = settings.model_dump(exclude=PROCESS_FIELDS)
    pipe.set(keys.desired(stream), packb({"settings": data, **(extra or {})}))
    pipe.sadd(keys.DESIRED, stream)


def _revive(pipe: Any, stream: str) -> None:
    """Declared again after a removal: its keys are kept again, and the views show it again."""
    pipe.delete(keys.removed(stream))
    for key in keys.stream_keys(stream):
        pipe.persist(key)


def _retire(pipe: Any, stream: str) -> None:
    pipe.set(keys.removed(stream), 1, ex=keys.REMOVED_TTL_S)
    for key in keys.stream_keys(stream):
        pipe.expire(key, keys.REMOVED_TTL_S)


def remove(client: redis.Redis, stream: str, *, data: redis.Redis | None = None) -> bool:
    """Undeclare `stream`: its daemon stops it; its keys expire after REMOVED_TTL_S, and once its
    queued frames are accounted for it leaves `rtai status`, the API and the live view. `data`:
    the stream's shard, as for put."""
    with client.pipeline() as pipe:
        pipe.srem(keys.DESIRED, stream)
        pipe.delete(keys.desired(stream))
        if data is None:
            _retire(pipe, stream)
        removed = pipe.execute()[0]
    if data is not None:
        _on_shard(
            data,
            stream,
            _retire,
            "stream {stream} removed (its daemon stops it), but its Redis shard does not answer ({why}): its keys "
            "there do not expire and it stays in the views until `rtai stream rm --purge {stream}` runs once the "
            "shard answers",
        )
    return bool(removed)


def _on_shard(data: redis.Redis, stream: str, change: Callable[[Any, str], None], failed: str) -> None:
    """`change` (_revive or _retire) on the stream's shard; one that does not answer is a
    RedisUnavailableError saying `failed` (with {stream} and {why})."""
    try:
        with data.pipeline() as pipe:
            change(pipe, stream)
            pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailableError(failed.format(stream=stream, why=describe(exc))) from exc


def purge(client: redis.Redis, stream: str, *, data: redis.Redis | None = None) -> int:
    """Remove `stream` and delete every key it has now (queued batches included); the number deleted."""
    stream = keys.check_stream_id(stream)
    remove(client, stream, data=data)
    shard = data if data is not None else client
    doomed = [k for k in keys.stream_keys(stream) if shard.exists(k)]
    for pattern in keys.stream_key_patterns(stream):
        doomed += [k.decode() if isinstance(k, bytes) else k for k in shard.scan_iter(match=pattern, count=1000)]
    with shard.pipeline() as pipe:
        for i in range(0, len(doomed), 500):
            pipe.delete(*doomed[i : i + 500])
        pipe.srem(keys.STREAMS, stream)
        pipe.execute()
    return len(doomed)


def is_removed(client: redis.Redis, stream: str) -> bool:
    return bool(client.exists(keys.removed(stream)))


#: A daemon's heartbeat: Redis' own clock, so hosts whose clocks disagree agree on who is alive.


def daemon_beat(client: redis.Redis, name: str) -> None:
    """A producer daemon says it is alive (for DAEMON_TTL_MS)."""
    client.eval(scripts.DAEMON_BEAT.source, 1, keys.DAEMONS, name, keys.DAEMON_TTL_MS)


def daemon_gone(client: redis.Redis, name: str) -> None:
    client.zrem(keys.DAEMONS, name)


def live_daemons(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(client.zcount(keys.DAEMONS, seconds * 1000 + micros // 1000, "+inf"))


#: The reason a declared stream gives while no producer daemon is there to run it.
NO_DAEMON = "unclaimed: no producer daemon is running (start one: rtai producer, or rtai up)"


def unclaimed_reason(client: redis.Redis, stream: str) -> str | None:
    """Why a declared stream is not running, when no daemon holds its claim; None while one does."""
    if client.exists(keys.claim(stream)):
        return None
    return NO_DAEMON if live_daemons(client) == 0 else "pending: waiting for a producer daemon to claim it"


def get(client: redis.Redis, stream: str) -> dict[str, Any] | None:
    raw = client.get(keys.desired(stream))
    if raw is None:
        return None
    value = unpackb(raw)
    if not isinstance(value, dict) or not isinstance(value.get("settings"), dict):
        raise SchemaError(f"desired state of {stream!r} is not a settings map")
    return value


def streams(client: redis.Redis) -> list[str]:
    return texts(client.smembers(keys.DESIRED))


def settings_for(client: redis.Redis, stream: str, redis_url: str) -> ProducerSettings | None:
    entry = get(client, stream)
    if entry is None:
        return None
    try:
        return ProducerSettings(**{**entry["settings"], "redis_url": redis_url})
    except ValueError as exc:
        raise ConfigError(f"desired state of {stream!r} has bad settings: {exc}") from exc


def load_file(client: redis.Redis, path: Path, redis_url: str, *, data_for: DataFor | None = None) -> list[str]:
    """Declare every stream of a YAML camera list; all or nothing, with the bad entry named."""
    return declare_file(client, path, redis_url, data_for=data_for)[0]


def declare_file(
    client: redis.Redis, path: Path, redis_url: str, *, data_for: DataFor | None = None
) -> tuple[list[str], str]:
    """Declare a camera list as load_file does; returns its streams and the key of its marker.

    The marker (`rtai:streamsfile:<digest of path and content>`) is written in the same
    transaction as the streams, so a marker that is gone means Redis forgot the whole declaration
    (restarted empty, flushed), while a marker that is there with a stream missing means someone
    removed that stream on purpose (see `file_forgotten`).

    The file holds `streams:`, a list of maps with `id`, `source` and any producer setting
    (max_fps, batch_size, imgsz, model, conf, loop, device, gpu_devices, pinned, max_workers,
    gpu_memory_mb, half). `data_for`: each stream's shard, when the fleet has several.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"camera list {path}: {exc}") from exc
    parsed = parse_file(text, path, redis_url)
    digest = hashlib.sha256(f"{path.resolve()}\0{text}".encode()).hexdigest()[:16]
    marker = keys.streams_file(digest)
    streams = [s.stream for s in parsed]
    with client.pipeline() as pipe:
        for settings in parsed:
            _put(pipe, settings.stream, settings, {"from_file": str(path)})
            if data_for is None:
                _revive(pipe, settings.stream)
        pipe.set(marker, packb({"path": str(path), "streams": streams}))
        pipe.execute()
    if data_for is not None:
        for stream in streams:
            with data_for(stream).pipeline() as pipe:
                _revive(pipe, stream)
                pipe.execute()
    return streams, marker


def parse_file(text: str, path: Path, redis_url: str) -> list[ProducerSettings]:
    """The streams of a camera list's YAML `text` (read from `path`), checked as a whole: ConfigError
    naming the file and the bad entry; nothing touches Redis."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"camera list {path}: {exc}") from exc
    entries = (data or {}).get("streams") if isinstance(data, dict | None) else None
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ConfigError(f"camera list {path}: 'streams' must be a list")
    parsed = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry:
            raise ConfigError(f"camera list {path}: entry {i} needs an 'id' and a 'source'")
        fields = {k: v for k, v in entry.items() if k != "id"}
        try:
            parsed.append(
                ProducerSettings(stream=keys.check_stream_id(str(entry["id"])), redis_url=redis_url, **fields)
            )
        except (ValueError, ConfigError) as exc:  # a bad setting, or a bad stream id
            raise ConfigError(f"camera list {path}: entry {i} ({entry['id']}): {exc}") from exc
    return parsed


def file_forgotten(client: redis.Redis, marker: str) -> bool:
    """True when the declaration that wrote `marker` is no longer in Redis."""
    return not client.exists(marker)
