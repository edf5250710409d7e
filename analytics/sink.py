"""Delivering the event log at least once: a Redis consumer group per sink.

A sink reads `rtai:eventlog` with XREADGROUP and XACKs an event only after its target took it.
On start it first re-reads its own pending entries (a sink killed mid-delivery delivers them again)
and claims entries other consumers of its group left pending longer than CLAIM_IDLE_MS (XAUTOCLAIM).
Delivery is at least once: a receiver may see an event twice, never zero times.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Protocol, cast

import redis

from common import keys

#: XREAD/XREADGROUP's reply without decode_responses: [(stream, [(id, {field: value})])].
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

log = logging.getLogger(__name__)

#: Pending entries of another consumer idle this long are claimed (it died or hangs).
CLAIM_IDLE_MS = 30_000
READ_COUNT = 100
READ_BLOCK_MS = 200
#: While the target refuses, the same event is retried after this pause (the log keeps the rest).
RETRY_PAUSE_S = 0.2


class Target(Protocol):
    def deliver(self, event: dict[str, Any]) -> bool:
        """True when the target took the event (it may be acked); False to retry later."""
        ...

    def close(self) -> None: ...


class SinkRunner:
    def __init__(self, client: redis.Redis, target: Target, *, name: str, consumer: str | None = None) -> None:
        self.client, self.target, self.name = client, target, name
        self.group = f"sink:{name}"
        self.consumer = consumer or name
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(keys.EVENT_LOG, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(self) -> None:
        self.ensure_group()
        self._drain("0")  # our own pending entries first: delivered before a kill, never acked
        self.client.xautoclaim(keys.EVENT_LOG, self.group, self.consumer, CLAIM_IDLE_MS, count=READ_COUNT)
        self._drain("0")
        while not self.stopping:
            try:
                self._drain(">")
            except redis.RedisError as exc:
                log.warning("sink %s: Redis error: %s", self.name, exc)
                time.sleep(RETRY_PAUSE_S)
        self.target.close()

    def _drain(self, start: str) -> None:
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {keys.EVENT_LOG: start},
            count=READ_COUNT,
            block=None if start == "0" else READ_BLOCK_MS,
        )
        for _key, entries in cast(StreamReply, reply or []):
            for entry_id, fields in entries:
                if not fields:  # trimmed from the log while pending
                    self.client.xack(keys.EVENT_LOG, self.group, entry_id)
                    continue
                event = json.loads(fields[b"e"])
                while not self.target.deliver(event):
                    if self.stopping:
                        return
                    time.sleep(RETRY_PAUSE_S)
                self.client.xack(keys.EVENT_LOG, self.group, entry_id)
                self.client.hincrby(keys.sink(self.name), "delivered", 1)
