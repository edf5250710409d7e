"""Every Lua script the fleet runs, in one place.

Each script names, in its header, the keys it takes (KEYS) and the values (ARGV). Every key a
script reads or writes is passed in KEYS, never built from ARGV inside the script:
tests/unit/test_scripts.py parses each one and fails on a key taken from ARGV. A Redis proxy or a
sharded deployment can then route a script by its keys, and a reader sees what a script touches
without reading its body. Field names that Python owns (the ledger's counters, RQ's worker state)
are passed in ARGV too, so the Lua never spells them.

Key map (built in common/keys.py; `<w>` a worker, `<s>` a stream, `<q>` a queue):

| script          | run by                           | KEYS                                               |
|-----------------|----------------------------------|----------------------------------------------------|
| DEQUEUE         | worker broker: fetch             | in-flight, RQ suspension, peers (alive, RQ hash), queues |
| GIVE_BACK       | worker broker: give back, retry  | in-flight, queue, started registry, job hash       |
| REQUEUE_DEAD    | broker: reap, teardown, supervisor | alive, in-flight; per job queue, started, kills  |
| SETTLE          | worker broker: settle            | settled, ledger, blob, history, worker, GPUs, channel |
| SET_ERROR       | worker jobs: model failed        | stream hash, removed marker                        |
| SLOT            | worker routing                   | the stream's slots                                 |
| ENQUEUE         | producer enqueue                 | stream, queue, RQ queues, job, blob, streams, ledger, upload |
| REFRESH         | producer enqueue                 | queue, blob, ledger                                |
| RECONCILE       | producer enqueue                 | stream hash, ledger                                |
| LEASE_RENEW     | tracker                          | the claim                                          |
| LEASE_RENEW_ALL | producer daemon                  | every claim held                                   |
| LEASE_RELEASE   | producer daemon, tracker         | the claim                                          |
| RESERVE         | desired state                    | desired streams                                    |
| DAEMON_BEAT     | desired state                    | live daemons                                       |
| EMIT_TRACKS     | tracker                          | tracks channel, tracks history                     |
| KEEP_SNAPSHOT   | tracker                          | snapshot, snapshot index, tracking stats           |
| APPEND_EVENT    | tracker: event log               | event seq, logs, events channel, event counts      |
| SINK_GAP        | sinks                            | the sink's hash                                    |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    def bind(self, client: redis.Redis) -> Any:
        """The script registered on `client` (EVALSHA, loaded again after a Redis restart)."""
        return client.register_script(self.source)


DEQUEUE = Script(
    "DEQUEUE",
    """
-- KEYS[1]: this worker's in-flight hash, KEYS[2]: RQ's suspension flag, KEYS[3 .. 2+2P]: each
-- peer's alive key and RQ worker hash, KEYS[3+2P ..]: candidate queues.
-- ARGV[1]: most jobs to take (dynamic batching), ARGV[2]: P, the number of peers to check (a
-- prefetch; 0 for a dequeue), ARGV[3], ARGV[4]: RQ's worker-state field and its idle value.
-- A prefetch takes nothing while a live peer is idle. Each job comes from the deepest queue (ties:
-- the first, which the worker rotates), so a backlog across streams is taken round-robin; every
-- job taken is in the in-flight hash in the same step. All reads come before the first write; a job
-- after the first is recorded before it is popped, and a refused record (Redis full) ends the
-- taking there: no job is ever popped without being recorded.
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local peers = tonumber(ARGV[2])
for p = 1, peers do
  local alive, rq = KEYS[1 + 2 * p], KEYS[2 + 2 * p]
  if redis.call('EXISTS', alive) == 1 and redis.call('HGET', rq, ARGV[3]) == ARGV[4] then return false end
end
local first = 3 + 2 * peers
local depths = {}
for i = first, #KEYS do depths[i] = redis.call('LLEN', KEYS[i]) end
local out = {}
for k = 1, tonumber(ARGV[1]) do
  local best, depth = nil, 0
  for i = first, #KEYS do
    if depths[i] > depth then best, depth = i, depths[i] end
  end
  if not best then break end
  local queue = KEYS[best]
  local id
  if k == 1 then
    id = redis.call('LPOP', queue)
    redis.call('HSET', KEYS[1], id, queue)
  else
    id = redis.call('LINDEX', queue, 0)
    local rec = redis.pcall('HSET', KEYS[1], id, queue)
    if type(rec) == 'table' and rec.err then break end
    redis.call('LPOP', queue)
  end
  depths[best] = depth - 1
  out[#out + 1] = queue
  out[#out + 1] = id
end
if #out == 0 then return false end
return out
""",
)

GIVE_BACK = Script(
    "GIVE_BACK",
    """
-- KEYS[1]: this worker's in-flight hash, KEYS[2]: the job's queue, KEYS[3]: RQ's started registry
-- of that queue, KEYS[4]: the job's hash.
-- ARGV[1]: job id, ARGV[2]: 'front' (given back: runs next) or 'back' (a retry: a failing batch
-- never blocks its stream), ARGV[3]: the job's started-registry members (space-separated),
-- ARGV[4]: RQ's status field and ARGV[5] its queued value.
-- One step: only a job this worker holds moves. The first write is the push: a Redis that refuses
-- writes refuses the whole script, and the job stays in flight.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == 'back' then redis.call('RPUSH', KEYS[2], ARGV[1]) else redis.call('LPUSH', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[4]) == 1 then redis.pcall('HSET', KEYS[4], ARGV[4], ARGV[5]) end
for member in string.gmatch(ARGV[3], '%S+') do redis.call('ZREM', KEYS[3], member) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
""",
)

REQUEUE_DEAD = Script(
    "REQUEUE_DEAD",
    """
-- KEYS[1]: the owner's alive key, KEYS[2]: its in-flight hash, then for job i (1-based):
-- KEYS[3i], KEYS[3i+1], KEYS[3i+2]: its queue, that queue's RQ started registry, its kill counter.
-- ARGV[1]: '1' forces (the owner is gone or is this process), ARGV[2]: '1' counts a kill for each
-- job (its worker died holding it), ARGV[3]: the kill counters' TTL, then for job i:
-- ARGV[2+2i]: its id, ARGV[3+2i]: its started-registry members (space-separated).
-- Only a job still in the hash, under the queue it was read with, moves; it goes to the front of
-- its queue (it waited longest), and leaves RQ's started registry so RQ never fails it.
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return {} end
local out = {}
for i = 1, (#KEYS - 2) / 3 do
  local queue, wip, kills = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local job = ARGV[2 + 2 * i]
  if redis.call('HGET', KEYS[2], job) == queue then
    redis.call('LPUSH', queue, job)
    if ARGV[2] == '1' then
      redis.call('INCR', kills)
      redis.call('EXPIRE', kills, ARGV[3])
    end
    for member in string.gmatch(ARGV[3 + 2 * i], '%S+') do redis.call('ZREM', wip, member) end
    redis.call('HDEL', KEYS[2], job)
    out[#out + 1] = job
  end
end
return out
""",
)

SETTLE = Script(
    "SETTLE",
    """
-- KEYS: settled marker, ledger, blob, history stream, worker stats, the stream's per-GPU counts,
-- results channel.
-- ARGV: settled TTL, history maxlen, published, stale, failed, worker name, gpu, the ledger's
-- published / dropped_stale / failed field names, then the result messages.
-- Exactly once: only the caller that sets the settled marker publishes and counts. The blob goes
-- either way (the batch is accounted for).
if not redis.call('SET', KEYS[1], ARGV[6], 'NX', 'EX', ARGV[1]) then
  redis.call('DEL', KEYS[3])
  return 0
end
for i = 11, #ARGV do
  redis.call('PUBLISH', KEYS[7], ARGV[i])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[i])
end
local pub, stale, failed = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if pub > 0 then redis.call('HINCRBY', KEYS[2], ARGV[8], pub) end
if stale > 0 then redis.call('HINCRBY', KEYS[2], ARGV[9], stale) end
if failed > 0 then redis.call('HINCRBY', KEYS[2], ARGV[10], failed) end
redis.call('HINCRBY', KEYS[5], 'frames', pub + stale + failed)
redis.call('HINCRBY', KEYS[5], 'published', pub)
redis.call('HINCRBY', KEYS[5], 'failed', failed)
redis.call('HINCRBY', KEYS[5], 'dropped_stale', stale)
redis.call('HINCRBY', KEYS[5], 'batches', 1)
if pub > 0 then redis.call('HINCRBY', KEYS[6], ARGV[7], pub) end
redis.call('DEL', KEYS[3])
return 1
""",
)

SET_ERROR = Script(
    "SET_ERROR",
    """
-- KEYS[1]: the stream's hash, KEYS[2]: its removed marker; ARGV: field, value, ...
-- A worker's `error` never resurrects a stream its producer stopped or an operator removed.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'state') == 'stopped' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
""",
)

SLOT = Script(
    "SLOT",
    """
-- KEYS[1]: the stream's slots; ARGV: worker, now ms, expiry ms, max workers
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 60000)
  return 1
end
return 0
""",
)

REFRESH = Script(
    "REFRESH",
    """
-- KEYS[1]: the stream's RQ queue, KEYS[2]: the batch's blob, KEYS[3]: the stream's ledger;
-- ARGV[1]: the batch's job id, ARGV[2]: the new blob, ARGV[3]: blob TTL (s), ARGV[4]: the produced
-- counter, ARGV[5]: the dropped_backpressure counter. Only a job still in its queue is touched: a
-- worker's dequeue script moves the job to its in-flight hash before the worker reads the blob, so
-- a job taken keeps the frame it was taken with. The superseded frame is counted produced (the new
-- one takes its place) and dropped for backpressure, with the new blob, in the same step.
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
return 1
""",
)

ENQUEUE = Script(
    "ENQUEUE",
    """
-- KEYS[1]: the stream's hash, KEYS[2]: its RQ queue, KEYS[3]: RQ's set of queues, KEYS[4]: the
-- job's hash, KEYS[5]: the batch's blob, KEYS[6]: the set of streams, KEYS[7]: the stream's ledger,
-- KEYS[8]: the producer's upload key, where the same round trip SET the blob just before.
-- ARGV[1], ARGV[2]: the next-batch and next-seq fields, ARGV[3]: the batch number the producer
-- expects, ARGV[4]: its first seq, ARGV[5]: frames, ARGV[6]: the queue bound, ARGV[7]: the stream
-- id, ARGV[8]: the job id, ARGV[9], ARGV[10]: the produced and dropped_backpressure counters,
-- ARGV[11 ..]: the RQ job hash, field, value, ...
-- A batch in one round trip, when the stream's counters are where its producer expects them (it is
-- the stream's only producer: the normal case); otherwise the upload is deleted, nothing else is
-- written, and the counters come back ({0, next batch, next seq}) for the producer to number the
-- batch again. The counters move, then either the whole batch is queued ({1}: the upload renamed
-- to the blob, without a copy; the job as RQ's enqueue writes it; queue; produced) or, over the
-- bound, its frames are counted produced and dropped ({2, depth}). The blob never passes through
-- the script (a copy in Lua would cost more than the round trip saved).
local counters = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])
local nb, ns = tonumber(counters[1]) or 0, tonumber(counters[2]) or 0
if nb + 1 ~= tonumber(ARGV[3]) or ns ~= tonumber(ARGV[4]) or redis.call('EXISTS', KEYS[8]) == 0 then
  redis.call('DEL', KEYS[8])
  return {0, nb, ns}
end
local n = tonumber(ARGV[5])
local depth = redis.call('LLEN', KEYS[2])
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], ARGV[2], n)
redis.call('SADD', KEYS[6], ARGV[7])
redis.call('HINCRBY', KEYS[7], ARGV[9], n)
if depth >= tonumber(ARGV[6]) then
  redis.call('HINCRBY', KEYS[7], ARGV[10], n)
  redis.call('DEL', KEYS[8])
  return {2, depth}
end
redis.call('RENAME', KEYS[8], KEYS[5])
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('HSET', KEYS[4], unpack(ARGV, 11))
redis.call('RPUSH', KEYS[2], ARGV[8])
return {1}
""",
)

RECONCILE = Script(
    "RECONCILE",
    """
-- KEYS[1]: the stream's hash, KEYS[2]: its ledger.
-- ARGV[1]: the next-seq field, ARGV[2]: the last seq counter value this producer got, ARGV[3]: the
-- next-batch field, ARGV[4]: the last batch number likewise, ARGV[5]: the produced counter,
-- ARGV[6]: produced as this producer counted it (its baseline plus every frame Redis acknowledged),
-- ARGV[7]: its baseline (produced when it started), ARGV[8]: the dropped_redis_failover counter,
-- ARGV[9]: a field only the producer's registration writes.
-- After a failover the new master may lack the old one's last writes. The counters never go back
-- (a seq already published is never handed out again), and frames this producer had counted that
-- Redis no longer counts are counted dropped_redis_failover. A stream Redis lost whole (restarted
-- empty: its registration gone, or its ledger below the baseline) is not a tail: -1, and the
-- producer reports it at exit instead. Returns {frames counted lost or -1, produced now}.
local whole = redis.call('HEXISTS', KEYS[1], ARGV[9]) == 0
for i = 1, 3, 2 do
  if (tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local produced = tonumber(redis.call('HGET', KEYS[2], ARGV[5]) or '0')
local expected, baseline = tonumber(ARGV[6]), tonumber(ARGV[7])
if whole or produced < baseline then return {-1, produced} end
if produced >= expected then return {0, produced} end
redis.call('HINCRBY', KEYS[2], ARGV[5], expected - produced)
redis.call('HINCRBY', KEYS[2], ARGV[8], expected - produced)
return {expected - produced, expected}
""",
)

LEASE_RENEW = Script(
    "LEASE_RENEW",
    """
-- KEYS[1]: a claim; ARGV[1]: its owner, ARGV[2]: lease (ms). Renewed only by its owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""",
)

LEASE_RENEW_ALL = Script(
    "LEASE_RENEW_ALL",
    """
-- KEYS: every claim an owner holds; ARGV[1]: the owner, ARGV[2]: lease (ms).
-- Per claim: 1 renewed, 2 retaken (it had lapsed and nobody took it), 0 lost to another owner.
local out = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    out[i] = redis.call('PEXPIRE', key, ARGV[2])
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    out[i] = 2
  else
    out[i] = 0
  end
end
return out
""",
)

LEASE_RELEASE = Script(
    "LEASE_RELEASE",
    """
-- KEYS[1]: a claim; ARGV[1]: its owner. Released only by its owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)

RESERVE = Script(
    "RESERVE",
    """
-- KEYS[1]: the desired streams; ARGV[1]: a stream, ARGV[2]: the cap. 1: declared (or already).
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
return redis.call('SADD', KEYS[1], ARGV[1])
""",
)

DAEMON_BEAT = Script(
    "DAEMON_BEAT",
    """
-- KEYS[1]: the live daemons (score: lease end, Redis time ms); ARGV[1]: a daemon, ARGV[2]: TTL (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
""",
)

EMIT_TRACKS = Script(
    "EMIT_TRACKS",
    """
-- KEYS[1]: the stream's tracks channel, KEYS[2]: its tracks history; ARGV[1]: maxlen, ARGV[2..]: frames.
for i = 2, #ARGV do
  redis.call('PUBLISH', KEYS[1], ARGV[i])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[i])
end
return #ARGV - 1
""",
)

KEEP_SNAPSHOT = Script(
    "KEEP_SNAPSHOT",
    """
-- KEYS[1]: a frame's snapshot, KEYS[2]: the stream's snapshot index, KEYS[3]: its tracking stats.
-- ARGV[1]: seq, ARGV[2]: snapshot TTL, ARGV[3]: now (s), ARGV[4]: most kept, ARGV[5]: most bytes
-- kept, ARGV[6]: a pending snapshot's TTL (one longer was kept already).
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then return -1 end
if ttl > tonumber(ARGV[6]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 1 end
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local size = redis.call('STRLEN', KEYS[1])
local kept = redis.call('ZRANGE', KEYS[2], 0, -1)
local total = size
for _, m in ipairs(kept) do total = total + tonumber(string.match(m, ':(%d+)$')) end
if #kept + 1 > tonumber(ARGV[4]) or total > tonumber(ARGV[5]) then
  redis.call('HINCRBY', KEYS[3], 'snapshots_refused', 1)
  return 0
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1] .. ':' .. size)
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], 'snapshots_kept', 1)
return 1
""",
)

APPEND_EVENT = Script(
    "APPEND_EVENT",
    """
-- KEYS[1]: the event counter, KEYS[2]: the event log, KEYS[3]: the stream's event log,
-- KEYS[4]: the stream's events channel, KEYS[5]: its event counts.
-- ARGV[1]: the event (JSON), ARGV[2]: log maxlen, ARGV[3]: stream log maxlen, ARGV[4]: its type.
local n = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1], 'n', n)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[1])
redis.call('PUBLISH', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
return n
""",
)

SINK_GAP = Script(
    "SINK_GAP",
    """
-- KEYS[1]: the sink's hash; ARGV: the event numbers it read, in order. Counts the numbers it never
-- saw (trimmed from the log before it read them) as lost_trimmed.
local last = tonumber(redis.call('HGET', KEYS[1], 'last_n') or '')
local lost = 0
for i = 1, #ARGV do
  local n = tonumber(ARGV[i])
  if last and n > last + 1 then lost = lost + n - last - 1 end
  if not last or n > last then last = n end
end
redis.call('HSET', KEYS[1], 'last_n', last)
if lost > 0 then redis.call('HINCRBY', KEYS[1], 'lost_trimmed', lost) end
return lost
""",
)

ALL = (
    DEQUEUE,
    GIVE_BACK,
    REQUEUE_DEAD,
    SETTLE,
    SET_ERROR,
    SLOT,
    ENQUEUE,
    REFRESH,
    RECONCILE,
    LEASE_RENEW,
    LEASE_RENEW_ALL,
    LEASE_RELEASE,
    RESERVE,
    DAEMON_BEAT,
    EMIT_TRACKS,
    KEEP_SNAPSHOT,
    APPEND_EVENT,
    SINK_GAP,
)
