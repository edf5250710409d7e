"""Delivering the event log at least once: a Redis consumer group per sink.

A sink reads `rtai:eventlog` with XREADGROUP and XACKs an event only after its target took it.
On start it first re-reads its own pending entries (a sink killed mid-delivery delivers them again)
and claims entries other consumers of its group left pending longer than CLAIM_IDLE_MS (XAUTOCLAIM).
Delivery is at least once: a receiver may see an event twice, never zero times, while the event is
in the log. A new sink starts with the events logged after it (`from_start` replays the whole log).
The log is capped (EVENT_LOG_MAXLEN): events trimmed before a stopped sink read them are counted in
the sink's `lost_trimmed` (a gap in the entries' ordinal `n`) and logged. An entry that is not an event,
or that a target refuses as malformed (SchemaError), is acked and counted in `bad`.

With several Redis shards each shard has its own event log (its streams' events): a sink runs one
runner per shard, each with that shard's consumer group and counters, and one target between them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, cast

import redis

from common import keys, scripts
from common.errors import SchemaError
from common.wire import decode_event

#: XREAD/XREADGROUP's reply without decode_responses: [(stream, [(id, {field: value})])].
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

log = logging.getLogger(__name__)

#: Pending entries of another consumer idle this long are claimed (it died or hangs).
CLAIM_IDLE_MS = 30_000
READ_COUNT = 100
READ_BLOCK_MS = 200
#: While the target refuses, the same event is retried after this pause (the log keeps the rest).
RETRY_PAUSE_S = 0.2


#: KEYS: the sink's hash; ARGV: ordinals read, in order. Adds the gaps (from `last_n`) to `lost_trimmed`.


class Target(Protocol):
    def deliver(self, event: dict[str, Any]) -> bool:
        """True when the target took the event (it may be acked); False to retry later."""
        ...

    def close(self) -> None: ...


class SinkRunner:
    def __init__(
        self,
        client: redis.Redis,
        target: Target,
        *,
        name: str,
        consumer: str | None = None,
        from_start: bool = False,
        where: str = "",
    ) -> None:
        self.client, self.target, self.name = client, target, name
        self.group = f"sink:{name}"
        self.consumer = consumer or name
        self.from_start = from_start
        self.where = where
        self.stopping = False
        self._gap = scripts.SINK_GAP.bind(self.client)

    def stop(self) -> None:
        self.stopping = True

    def ensure_group(self) -> None:
        """Create the sink's group (at the log's end, or its start with from_start) unless it exists; a new
        group at the end records the log's ordinal, so that what is trimmed from then on is counted."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xgroup_create(keys.EVENT_LOG, self.group, id="0" if self.from_start else "$", mkstream=True)
            pipe.get(keys.EVENT_SEQ)
            created, seq = pipe.execute(raise_on_error=False)
        if isinstance(created, redis.ResponseError):
            if "BUSYGROUP" not in str(created):
                raise created
            return
        log.info("sink %s: new, delivering %s", self.name, "the whole log" if self.from_start else "new events")
        if not self.from_start:
            self.client.hset(keys.sink(self.name), "last_n", int(seq or 0))

    def run(self) -> None:
        """Deliver until stopped. After a Redis error the start is redone (the group ensured, this
        consumer's pending entries delivered again), so a restarted Redis loses no event either."""
        started = False
        while not self.stopping:
            try:
                if not started:
                    self._start()
                    started = True
                self._drain(">")
            except redis.RedisError as exc:
                log.warning("sink %s%s: Redis error: %s", self.name, self.where, exc)
                started = False
                time.sleep(RETRY_PAUSE_S)

    def _start(self) -> None:
        self.ensure_group()
        self._drain("0")  # our own pending entries first: delivered before a kill, never acked
        self.client.xautoclaim(keys.EVENT_LOG, self.group, self.consumer, CLAIM_IDLE_MS, count=READ_COUNT)
        self._drain("0")

    def _drain(self, start: str) -> None:
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {keys.EVENT_LOG: start},
            count=READ_COUNT,
            block=None if start == "0" else READ_BLOCK_MS,
        )
        for _key, entries in cast(StreamReply, reply or []):
            if start == ">":
                self._count_trimmed(entries)
            for entry_id, fields in entries:
                if not fields:  # trimmed from the log while pending
                    log.warning("sink %s: event %s lost: trimmed from the log while pending", self.name, entry_id)
                    self._ack(entry_id, "lost_trimmed")
                    continue
                try:
                    event = decode_event(fields.get(b"e"))
                    while not self.target.deliver(event):
                        if self.stopping:
                            return
                        time.sleep(RETRY_PAUSE_S)
                except SchemaError as exc:
                    log.warning("sink %s: entry %s skipped: %s", self.name, entry_id.decode(), exc)
                    self._ack(entry_id, "bad")
                    continue
                self._ack(entry_id, "delivered")

    def _ack(self, entry_id: bytes, counter: str) -> None:
        """XACK an entry and count it in one transaction: a sink killed between the two would leave the
        event acked (never delivered again) and uncounted."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(keys.EVENT_LOG, self.group, entry_id)
            pipe.hincrby(keys.sink(self.name), counter, 1)
            pipe.execute()

    def _count_trimmed(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """New entries just read: a gap in their ordinals (from the last one this sink read) is events the log
        trimmed before the sink got to them."""
        ordinals = []
        for _id, fields in entries:
            try:
                ordinals.append(int(fields.get(b"n", b"")))
            except ValueError:
                continue  # an entry written without an ordinal: nothing to tell from it
        if ordinals:
            lost = int(cast(int, self._gap(keys=[keys.sink(self.name)], args=ordinals)))
            if lost:
                log.warning("sink %s: %d event(s) lost: trimmed from the log before it read them", self.name, lost)


class OneAtATime:
    """A target shared by the runners of several shards: one delivery at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock = threading.Lock()

    def deliver(self, event: dict[str, Any]) -> bool:
        with self._lock:
            return self.target.deliver(event)

    def close(self) -> None:
        self.target.close()
