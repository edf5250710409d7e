"""Reading what the tracking stage wrote: recent events, tracked frames (for the CLI and the API)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import cast

import redis

from analytics.eventlog import recent_events
from common import keys
from common.errors import RecordError
from common.wire import TrackedFrame, decode_tracked

__all__ = ["recent_events", "tracked_frames"]

log = logging.getLogger(__name__)


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


def tracked_frames(
    client: redis.Redis, streams: list[str], *, replay: int = 0, deadline: float | None = None
) -> Iterator[TrackedFrame]:
    """Tracked frames of `streams`: the last `replay` of each from history, then live ones; a record
    that is not a tracked frame is skipped (logged), never raised."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*[keys.tracks_channel(keys.check_stream_id(s)) for s in streams])
    try:
        for s in streams if replay else []:
            for _id, fields in reversed(_entries(client.xrevrange(keys.tracks_history(s), count=replay))):
                frame = _checked(fields.get(b"t"), keys.tracks_history(s))
                if frame is not None:
                    yield frame
        while deadline is None or time.monotonic() < deadline:
            msg = pubsub.get_message(timeout=0.2)
            if msg is not None:
                frame = _checked(msg["data"], str(msg.get("channel")))
                if frame is not None:
                    yield frame
    finally:
        pubsub.close()
