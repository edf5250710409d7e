"""Which queues a worker listens on, re-read from the registered streams once a second, and the
peers that serve the same streams (a prefetch takes nothing while one of them is idle)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from common import keys
from common.replies import text, texts

from .broker import rq_compat
from .routing import Router

#: How often the list of streams is re-read, so new streams are picked up without a restart.
REFRESH_S = 1.0
#: A worker counts as serving a stream (a credit of its producer) this long after it last said so.
SERVER_LAPSE_MS = 5000


class Queues:
    def __init__(
        self, client: redis.Redis, router: Router, record: rq_compat.WorkerRecord, now_ms: Callable[[], int]
    ) -> None:
        self.client = client
        self.router = router
        self.record = record
        self.name = router.name
        self._now_ms = now_ms
        self.keys: list[str] = []
        #: The streams served (their producers' credits, producer/flow.py) and the other workers serving them.
        self.served: list[str] = []
        self.peers: list[str] = []
        #: The deepest of these queues at the last refresh (a worker with several shards tries the
        #: shard with the deepest queue first).
        self.depth = 0
        self._read_at = 0.0
        self._turn = 0

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._read_at < REFRESH_S:
            return
        self._read_at = now
        streams = self.router.eligible(texts(self.client.smembers(keys.STREAMS)))
        self._renew_servers(streams)
        new = [keys.queue_key(s) for s in streams]
        if new != self.keys:
            old, self.keys = self.keys, new
            self.record.set_queues(old, new)

    def _renew_servers(self, streams: list[str]) -> None:
        """Tell each stream's producer this worker takes its jobs (its credits, producer/flow.py); see
        how deep the deepest queue is."""
        if not streams:
            self.depth = 0
            return
        self.served = streams
        now_ms = self._now_ms()
        with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.zadd(keys.servers(stream), {self.name: now_ms + SERVER_LAPSE_MS})
                pipe.expire(keys.servers(stream), keys.SERVERS_TTL_S)
                pipe.zrangebyscore(keys.servers(stream), now_ms, "+inf")
                pipe.llen(keys.queue_key(stream))
            replies = pipe.execute()
        self.peers = sorted({text(w) for members in replies[2::4] for w in members} - {self.name})
        self.depth = max(int(n) for n in replies[3::4])

    def rotated(self) -> list[str]:
        """The queue keys, starting one further each time: equally deep queues (with credit-based
        flow, every stream keeps about one batch waiting) are served round-robin, not by name."""
        if not self.keys:
            return []
        k = self._turn % len(self.keys)
        self._turn += 1
        return self.keys[k:] + self.keys[:k]

    def leave(self, pipe: redis.client.Pipeline) -> None:
        """Its producers' credits drop now, not when they lapse."""
        for stream in self.served:
            pipe.zrem(keys.servers(stream), self.name)
