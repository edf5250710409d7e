"""Reading what the tracking stage wrote: recent events, tracked frames (for the CLI and the API)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from operator import attrgetter
from typing import Any, cast

import redis
from redis.client import PubSub

from analytics.eventlog import read_recent, recent_events
from common import keys
from common.errors import RecordError
from common.redis_client import describe, subscribing
from common.shards import Fleet, Shards, home_of
from common.subscription import AGAIN, ANSWER_S, BEGINNING, Given, Subscription, merged
from common.wire import TrackedFrame, decode_event, decode_tracked

__all__ = ["live_events", "recent_events", "tracked_frames"]

log = logging.getLogger(__name__)

_SEQ = attrgetter("seq")

#: How far back in a stream's tracks history a reconnecting subscriber looks for what it missed.
RECONNECT_REPLAY = 1000


Entry = tuple[bytes, dict[bytes, bytes]]


def _entries(reply: object) -> list[Entry]:
    """A Redis Stream range reply as redis-py returns it without decode_responses."""
    return cast(list[Entry], reply or [])


def _checked(data: object, where: str) -> TrackedFrame | None:
    try:
        return decode_tracked(data)
    except RecordError as exc:
        log.warning("a tracked frame in %s skipped: %s", where, exc)
        return None


def _history(client: redis.Redis, stream: str, count: int) -> list[TrackedFrame]:
    """The last `count` tracked frames of `stream` in its history, oldest first (bad ones skipped)."""
    history = client.xrevrange(keys.tracks_history(stream), count=count)
    frames = (_checked(fields.get(b"t"), keys.tracks_history(stream)) for _id, fields in reversed(_entries(history)))
    return [f for f in frames if f is not None]


def tracked_frames(
    client: Fleet, streams: list[str], *, replay: int = 0, deadline: float | None = None
) -> Iterator[TrackedFrame]:
    """Tracked frames of `streams` (each read from its shard): the last `replay` of each from history,
    then live ones; a record that is not a tracked frame is skipped (logged), never raised.

    Each shard's subscription subscribes again when it is lost or goes silent (a restart, a Sentinel
    failover, a hung master: common/subscription.py), and what its streams tracked meanwhile is read
    from their history first, so the gap is filled and nothing is given twice. With shards, each is
    read on its own thread: one that hangs or is down holds only its own streams."""
    if isinstance(client, Shards) and client.sharded:
        feeds = {
            f"rtai-tracks:{i}": partial(
                _tracked_on, client.client(i), names, replay=replay, deadline=deadline, where=client.label(i)
            )
            for i, names in client.by_shard(streams).items()
        }
        return merged(feeds, deadline=deadline)
    return _tracked_on(home_of(client), streams, replay=replay, deadline=deadline)


def _tracked_on(
    place: redis.Redis, streams: list[str], *, replay: int, deadline: float | None, where: str = ""
) -> Iterator[TrackedFrame]:
    """tracked_frames on one Redis; `where` names it when it is one shard of several (patient then:
    a shard that does not answer yet is tried again, its replay skipped)."""
    given: dict[str, Given] = {s: Given() for s in streams}
    listen = subscribing(place, ANSWER_S)

    def subscribed() -> PubSub:
        pubsub = listen.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*[keys.tracks_channel(keys.check_stream_id(s)) for s in streams])
        return pubsub

    def floors() -> None:  # where each stream's history stood when the subscription began
        with place.pipeline(transaction=False) as pipe:
            for s in streams:
                pipe.xrevrange(keys.tracks_history(s), count=1)
            newest = pipe.execute()
        for s, entries in zip(streams, newest, strict=True):
            given[s].floor = _floor(_entries(entries), partial(_tracked_entry, where=s), _SEQ)

    def missed() -> list[TrackedFrame]:
        return [f for s in streams for f in given[s].missed(_history(place, s, RECONNECT_REPLAY), _SEQ)]

    sub = Subscription(
        subscribed, what=f"the tracks subscription of {where or 'Redis'}", patient=bool(where), on_first_open=floors
    )
    try:
        for s in streams if replay else []:
            try:
                history = _history(place, s, replay)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not where:
                    raise
                log.warning("no replay of %s: %s does not answer (%s)", s, where, describe(exc))
                continue
            for frame in history:
                given[s].add(frame.seq)
                yield frame
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            msg = sub.get(wait)
            if msg is AGAIN:  # subscribed again: first what the streams tracked meanwhile
                for frame in sub.refill(missed):
                    given.setdefault(frame.stream, Given()).add(frame.seq)
                    yield frame
                continue
            if msg is None or msg["type"] != "message":
                continue
            live = _checked(msg["data"], str(msg.get("channel")))
            if live is not None and live.seq not in given.setdefault(live.stream, Given()):
                given[live.stream].add(live.seq)
                yield live
    finally:
        sub.close()


def _tracked_entry(fields: dict[bytes, bytes], *, where: str) -> TrackedFrame | None:
    return _checked(fields.get(b"t"), where)


def _floor(entries: list[Entry], decode: Callable[[dict[bytes, bytes]], Any], key: Callable[[Any], Any]) -> Any:
    """A Given's floor from its history's newest entry (XREVRANGE COUNT 1): that record's key,
    BEGINNING for an empty history, None (unknown) for an entry that does not decode."""
    if not entries:
        return BEGINNING
    record = decode(entries[0][1] or {})
    return key(record) if record is not None else None


def _event_key(event: dict[str, Any]) -> tuple[int, str]:
    """An event's place in its stream: its frame's seq, then its id (`stream:seq:i`)."""
    seq = event.get("seq")
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else -1, str(event.get("id")))


def live_events(
    client: redis.Redis, stream: str, *, replay: int = 0, deadline: float | None = None
) -> Iterator[dict[str, Any]]:
    """`stream`'s events (`client` is its shard): the last `replay` from its event log, then live
    ones as the tracker publishes them; one that is not an event is skipped (logged). A lost or
    silent subscription subscribes again (common/subscription.py) and the events published meanwhile
    are read from the stream's event log first, so none is missed or given twice."""
    channel = keys.events_channel(keys.check_stream_id(stream))
    given = Given()
    listen = subscribing(client, ANSWER_S)

    def subscribed() -> PubSub:
        pubsub = listen.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(channel)
        return pubsub

    def floor() -> None:  # the stream's newest event when the subscription began
        newest = read_recent(client, stream=stream, limit=1)
        if newest.events:
            given.floor = _event_key(newest.events[0])
        elif not newest.skipped and not newest.scan_stopped:
            given.floor = BEGINNING

    def missed() -> list[dict[str, Any]]:
        return given.missed(reversed(recent_events(client, stream=stream, limit=RECONNECT_REPLAY)), _event_key)

    sub = Subscription(subscribed, what=f"the events subscription of {stream}", on_first_open=floor)
    try:
        for event in reversed(recent_events(client, stream=stream, limit=replay)) if replay else []:
            given.add(_event_key(event))
            yield event
        while deadline is None or time.monotonic() < deadline:
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            msg = sub.get(wait)
            if msg is AGAIN:  # subscribed again: first what the stream's event log got meanwhile
                for event in sub.refill(missed):
                    given.add(_event_key(event))
                    yield event
                continue
            if msg is None or msg["type"] != "message":
                continue
            try:
                event = decode_event(msg["data"])
            except RecordError as exc:
                log.warning("a message on %s skipped: %s", channel, exc)
                continue
            if _event_key(event) not in given:
                given.add(_event_key(event))
                yield event
    finally:
        sub.close()
