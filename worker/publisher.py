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

    def settle_many(self, settlements: list[Settlement]) -> list[bool]:
        """Publish and count several batches in one round trip (a group's batches: one settle script
        each, pipelined). A batch whose settle Redis refused is settled again on its own, with
        `settle`'s retries. Each: False when another worker had already settled it."""
        if len(settlements) <= 1:
            return [self.settle(s) for s in settlements]
        with self.client.pipeline(transaction=False) as pipe:
            for s in settlements:
                call = self._call(s)
                # EVALSHA itself: a script object on a pipeline asks SCRIPT EXISTS first (a round trip)
                pipe.evalsha(self._settle.sha, len(call["keys"]), *call["keys"], *call["args"])
            replies = pipe.execute(raise_on_error=False)
        done: list[bool] = []
        for s, reply in zip(settlements, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError) or (
                isinstance(reply, redis.ResponseError) and write_rejected(reply)
            ):
                done.append(self.settle(s))  # not loaded yet (or Redis restarted), or refused: on its own
            elif isinstance(reply, Exception):
                raise reply
            else:
                done.append(bool(reply))
        return done

    def _settle_once(self, s: Settlement) -> bool:
        return bool(self._settle(**self._call(s)))

    def _call(self, s: Settlement) -> dict[str, list]:
        """The settle script's keys and arguments for one batch."""
        return dict(
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

    def is_settled(self, stream: str, batch: int) -> bool:
        return bool(self.client.exists(keys.settled(stream, batch)))
