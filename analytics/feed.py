"""Reading what the tracking stage wrote: recent events, tracked frames (for the CLI and the API)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import cast

from analytics.eventlog import recent_events
from common import keys
from common.errors import RecordError
from common.shards import Fleet, Shards, client_for
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
    client: Fleet, streams: list[str], *, replay: int = 0, deadline: float | None = None
) -> Iterator[TrackedFrame]:
    """Tracked frames of `streams` (each read from its shard): the last `replay` of each from history,
    then live ones; a record that is not a tracked frame is skipped (logged), never raised."""
    by_shard = client.by_shard(streams) if isinstance(client, Shards) else {0: streams}
    pubsubs = []
    try:
        for i, names in by_shard.items():
            place = client.client(i) if isinstance(client, Shards) else client
            pubsub = place.pubsub(ignore_subscribe_messages=True)
            pubsubs.append(pubsub)
            pubsub.subscribe(*[keys.tracks_channel(keys.check_stream_id(s)) for s in names])
        for s in streams if replay else []:
            history = client_for(client, s).xrevrange(keys.tracks_history(s), count=replay)
            for _id, fields in reversed(_entries(history)):
                frame = _checked(fields.get(b"t"), keys.tracks_history(s))
                if frame is not None:
                    yield frame
        wait = 0.2 / max(1, len(pubsubs))
        while deadline is None or time.monotonic() < deadline:
            for pubsub in pubsubs:
                msg = pubsub.get_message(timeout=wait)
                if msg is not None:
                    frame = _checked(msg["data"], str(msg.get("channel")))
                    if frame is not None:
                        yield frame
    finally:
        for pubsub in pubsubs:
            pubsub.close()
