"""Settle a batch: publish its results and count every frame, exactly once, in one Lua script.

The script sets the batch's `settled` marker with NX; only the caller that sets it publishes
(pub/sub + capped Redis Stream) and counts. A second worker finishing the same batch (after a
requeue) changes nothing. The blob is deleted either way: the batch is accounted for.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis

from common import keys
from common.redis_client import describe, write_rejected

log = logging.getLogger(__name__)

#: Replay depth for late subscribers (per stream); MAXLEN ~ keeps trimming cheap.
HISTORY_MAXLEN = 10_000
#: A settled marker outlives any requeue of its batch by far.
SETTLED_TTL_S = 3600
#: While Redis refuses writes (full, read-only), a settle is retried with backoff up to this pause:
#: memory freed is seen within half a second.
SETTLE_RETRY_MAX_S = 0.5

SETTLE_LUA = """
-- KEYS: settled marker, ledger, blob, history stream, worker stats, stream's per-GPU counts
-- ARGV: channel, settled ttl, history maxlen, published, stale, failed, worker name, gpu, msg...
if not redis.call('SET', KEYS[1], ARGV[7], 'NX', 'EX', ARGV[2]) then
  redis.call('DEL', KEYS[3])
  return 0
end
for i = 9, #ARGV do
  redis.call('PUBLISH', ARGV[1], ARGV[i])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[i])
end
local pub, stale, failed = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if pub > 0 then redis.call('HINCRBY', KEYS[2], 'published', pub) end
if stale > 0 then redis.call('HINCRBY', KEYS[2], 'dropped_stale', stale) end
if failed > 0 then redis.call('HINCRBY', KEYS[2], 'failed', failed) end
redis.call('HINCRBY', KEYS[5], 'frames', pub + stale + failed)
redis.call('HINCRBY', KEYS[5], 'published', pub)
redis.call('HINCRBY', KEYS[5], 'failed', failed)
redis.call('HINCRBY', KEYS[5], 'dropped_stale', stale)
redis.call('HINCRBY', KEYS[5], 'batches', 1)
if pub > 0 then redis.call('HINCRBY', KEYS[6], ARGV[8], pub) end
redis.call('DEL', KEYS[3])
return 1
"""


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
        self._settle = client.register_script(SETTLE_LUA)

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
            ],
            args=[
                keys.results_channel(s.stream),
                SETTLED_TTL_S,
                HISTORY_MAXLEN,
                len(s.messages),
                s.stale,
                s.failed,
                self.worker_name,
                self.gpu,
                *s.messages,
            ],
        )
        return bool(done)

    def is_settled(self, stream: str, batch: int) -> bool:
        return bool(self.client.exists(keys.settled(stream, batch)))
