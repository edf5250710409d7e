"""Settle a batch: publish its results and count every frame, exactly once, in one Lua script
(common/scripts.py SETTLE).

The script sets the batch's `settled` marker with NX; only the caller that sets it publishes
(pub/sub + capped Redis Stream) and counts. A second worker finishing the same batch (after a
requeue) changes nothing. The blob is deleted either way: the batch is accounted for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis

from common import keys, scripts
from common.redis_client import describe, write_rejected
from common.states import Outcome

log = logging.getLogger(__name__)

#: Replay depth for late subscribers (per stream); MAXLEN ~ keeps trimming cheap.
HISTORY_MAXLEN = 10_000
#: A settled marker outlives any requeue of its batch by far.
SETTLED_TTL_S = 3600
#: While Redis refuses writes (full, read-only), a settle is retried with backoff up to this pause:
#: memory freed is seen within half a second.
SETTLE_RETRY_MAX_S = 0.5


@dataclass
class Settlement:
    stream: str
    batch: int
    messages: list[bytes] = field(default_factory=list)
    stale: int = 0
    failed: int = 0


class Publisher:
    def __init__(self, client: redis.Redis, worker_name: str, gpu: str = "cpu") -> None:
        self.client = client
        self.worker_name = worker_name
        self.gpu = gpu
        self._settle = scripts.SETTLE.bind(client)

    def settle(self, s: Settlement) -> bool:
        """Publish and count a batch; False when another worker had already settled it.

        While Redis refuses writes (out of memory, read-only replica, MISCONF) the settle is retried
        with backoff (the script writes nothing before its first refused write), so a full Redis
        delays results instead of failing batches (RQ's job timeout bounds the wait).
        """
        delay = 0.05
        while True:
            try:
                return self._settle_once(s)
            except redis.ResponseError as exc:
                if not write_rejected(exc):
                    raise
                if delay == 0.05:
                    log.warning(
                        "%s: %s; retrying the settle of %s#%s", self.worker_name, describe(exc), s.stream, s.batch
                    )
                time.sleep(delay)
                delay = min(delay * 2, SETTLE_RETRY_MAX_S)

    def _settle_once(self, s: Settlement) -> bool:
        done = self._settle(
            keys=[
                keys.settled(s.stream, s.batch),
                keys.ledger(s.stream),
                keys.batch_blob(s.stream, s.batch),
                keys.history(s.stream),
                keys.worker(self.worker_name),
                keys.stream_gpus(s.stream),
                keys.results_channel(s.stream),
            ],
            args=[
                SETTLED_TTL_S,
                HISTORY_MAXLEN,
                len(s.messages),
                s.stale,
                s.failed,
                self.worker_name,
                self.gpu,
                Outcome.PUBLISHED.value,
                Outcome.DROPPED_STALE.value,
                Outcome.FAILED.value,
                *s.messages,
            ],
        )
        return bool(done)

    def is_settled(self, stream: str, batch: int) -> bool:
        return bool(self.client.exists(keys.settled(stream, batch)))
