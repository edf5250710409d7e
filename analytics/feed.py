"""Reading what the tracking stage wrote: recent events, tracked frames (for the CLI and the API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import redis

from analytics.eventlog import recent_events
from common import keys
from common.wire import unpackb

__all__ = ["recent_events", "tracked_frames"]


Entry = tuple[bytes, dict[bytes, bytes]]


def _entries(reply: object) -> list[Entry]:
    """A Redis Stream range reply as redis-py returns it without decode_responses."""
    return cast(list[Entry], reply or [])


def tracked_frames(
    client: redis.Redis, streams: list[str], *, replay: int = 0, deadline: float | None = None
) -> Iterator[dict[str, Any]]:
    """Tracked frames of `streams`: the last `replay` of each from history, then live ones."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*[keys.tracks_channel(keys.check_stream_id(s)) for s in streams])
    for s in streams if replay else []:
        for _id, fields in reversed(_entries(client.xrevrange(keys.tracks_history(s), count=replay))):
            yield unpackb(fields[b"t"])
    while deadline is None or time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.2)
        if msg is not None:
            yield unpackb(msg["data"])
