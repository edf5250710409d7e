"""Credit-based flow: a stream samples a new batch only while the fleet has room for it.

A stream's credits are the workers that take its jobs now (they renew `rtai:servers:<stream>`
every second; capped by max_workers, 1 when pinned). The producer starts a new batch only while
fewer batches than credits wait in the stream's queue, so at most about one batch per worker waits
in Redis: when the fleet is slower than the camera, frames are skipped at the source (the source
thread keeps only the newest) instead of being encoded, shipped, and dropped stale.

What the ledger counts: every sampling tick (1/max_fps) at which the source had a new frame is a
frame. It is either produced to Redis, or, when the stream had no room at that tick, counted
produced and `dropped_backpressure` (skipped at the source). Camera frames between ticks (the
camera is faster than max_fps) are not frames of the stream. So produced == published + dropped_*
+ failed holds as before. With no worker taking the stream yet, the stream has room for one waiting
batch (NO_SERVER_CREDITS): a worker that comes later starts on a fresh frame (with fresh_batches
that batch keeps taking the newest frame), not on seconds of backlog.
"""

from __future__ import annotations

import time

import redis

from common import keys
from common.clock import RedisClock
from common.config import ProducerSettings

#: How often the number of serving workers is re-read.
CREDITS_EVERY_S = 0.5
#: Batches that may wait while no worker takes the stream: one, kept fresh, for the first worker.
NO_SERVER_CREDITS = 1
#: How often a stream without room looks again (one LLEN).
ROOM_POLL_S = 0.003


class Flow:
    def __init__(self, client: redis.Redis, settings: ProducerSettings, clock: RedisClock, queue_key: str) -> None:
        self.client = client
        self.settings = settings
        self.clock = clock
        self.queue_key = queue_key
        self._servers_key = keys.servers(settings.stream)
        self._credits = 0
        self._credits_at = -1e9

    def credits(self) -> int:
        """Batches the stream may have waiting: the workers taking it (NO_SERVER_CREDITS while none)."""
        now = time.monotonic()
        if now - self._credits_at >= CREDITS_EVERY_S:
            self._credits_at = now
            n = self.client.zcount(self._servers_key, int(self.clock.now() * 1000), "+inf")
            s = self.settings
            if s.pinned:
                n = min(n, 1)
            if s.max_workers:
                n = min(n, s.max_workers)
            self._credits = n or NO_SERVER_CREDITS
        return self._credits

    def has_room(self) -> bool:
        if not self.settings.credit_flow:
            return True
        return self.client.llen(self.queue_key) < self.credits()

    def wait_for_room(self, stop) -> float:
        """Block until the stream has room (or `stop()`); the seconds spent waiting."""
        t0 = time.monotonic()
        while not self.has_room():
            if stop():
                break
            time.sleep(ROOM_POLL_S)
        return time.monotonic() - t0
