"""The event log: appending an event (global log, the stream's own log, pub/sub, counters) and reading
recent events back without trusting what is stored.

Each entry of `rtai:eventlog` carries `e` (the event's JSON) and `n`, its ordinal (`rtai:eventseq`): a sink
that finds a gap in `n` knows how many events were trimmed before it read them. Each stream's events are also
in `rtai:streamevents:<stream>`, so a quiet stream's events are found however busy the others are.
An entry that is not an event (not JSON, not an object, NaN, too deep, too big) is skipped and counted,
never fatal to its reader.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from common import keys, scripts
from common.errors import SchemaError
from common.shards import Fleet, Shards
from common.wire import decode_event, encode_event

log = logging.getLogger(__name__)

#: Replay depth of the event log (sinks read it; a stopped sink finds this many events waiting).
EVENT_LOG_MAXLEN = 100_000
#: Replay depth of one stream's own events (what GET /events?stream= can return).
STREAM_EVENTS_MAXLEN = 10_000
#: The most entries GET /events scans from the end of a log.
SCAN_MAX = 10_000

#: One event: ordinal, global log, the stream's log, its channel and its per-type count, atomically.
#: KEYS: eventseq, eventlog, streamevents, events channel, eventcount; ARGV: JSON, log cap, stream cap, type.

Entry = tuple[bytes, dict[bytes, bytes]]


def append_event(pipe: Any, event: dict[str, Any], *, log_maxlen: int = EVENT_LOG_MAXLEN) -> None:
    """Queue one event (with `stream` and `type`) on a pipeline (or run it on a client)."""
    stream = event["stream"]
    text = encode_event(event)
    pipe.eval(
        scripts.APPEND_EVENT.source,
        5,
        keys.EVENT_SEQ,
        keys.EVENT_LOG,
        keys.stream_events(stream),
        keys.events_channel(stream),
        keys.event_counts(stream),
        text,
        log_maxlen,
        STREAM_EVENTS_MAXLEN,
        event["type"],
    )


@dataclass
class Recent:
    """Recent events, newest first, with what the read skipped and whether it stopped at SCAN_MAX."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    scan_stopped: bool = False
    #: shards that did not answer (their events are missing)
    unreachable: int = 0


def read_recent(client: Fleet, *, stream: str | None = None, kind: str | None = None, limit: int = 100) -> Recent:
    """The newest events first, at most `limit`, filtered by stream and type; bad entries skipped.
    With shards a stream's events are read from its shard, and all events from every shard's log,
    merged by capture time."""
    if not isinstance(client, Shards):
        return _read_one(client, stream=stream, kind=kind, limit=limit)
    if stream is not None:
        return _read_one(client.for_stream(stream), stream=stream, kind=kind, limit=limit)
    parts, unreachable = [], 0
    for i, c in client.clients():
        try:
            parts.append(_read_one(c, stream=None, kind=kind, limit=limit))
        except redis.RedisError as exc:  # one shard down: the others' events still answer
            log.info("events of %s unreadable: %s", client.label(i), exc)
            unreachable += 1
    if not parts:
        raise redis.ConnectionError("no Redis shard answers")
    out = Recent(skipped=sum(p.skipped for p in parts), scan_stopped=any(p.scan_stopped for p in parts))
    out.unreachable = unreachable
    merged = heapq.merge(*(p.events for p in parts), key=_newest_first)
    out.events = list(itertools.islice(merged, limit))
    return out


def _newest_first(event: dict[str, Any]) -> float:
    t = event.get("t")
    return -float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0


def _read_one(client: redis.Redis, *, stream: str | None, kind: str | None, limit: int) -> Recent:
    out = Recent()
    if limit <= 0:
        return out
    key = keys.EVENT_LOG
    if stream is not None and client.exists(keys.stream_events(stream)):
        key = keys.stream_events(stream)
    entries = cast(list[Entry], client.xrevrange(key, count=SCAN_MAX) or [])
    for _id, fields in entries:
        try:
            event = decode_event(fields.get(b"e"))
        except SchemaError as exc:
            log.info("event log entry %r skipped: %s", _id, exc)
            out.skipped += 1
            continue
        if (stream is None or event.get("stream") == stream) and (kind is None or event.get("type") == kind):
            out.events.append(event)
            if len(out.events) >= limit:
                return out
    out.scan_stopped = len(entries) >= SCAN_MAX
    return out


def recent_events(
    client: Fleet, *, stream: str | None = None, kind: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """read_recent's events alone (what analytics.feed.recent_events returns, without its failure modes)."""
    return read_recent(client, stream=stream, kind=kind, limit=limit).events
