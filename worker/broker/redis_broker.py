"""The worker's side of the queues: fetch, give back, retry, requeue the dead, settle, fail.

Every move of a job between a queue and a worker's in-flight hash is one Lua script
(common/scripts.py), so no kill at any point loses a job or runs it twice unaccounted:
- `fetch` (DEQUEUE) takes up to n jobs from the deepest queues into the in-flight hash;
- `give_back` (GIVE_BACK, front) returns a held job that did not run;
- `retry` (GIVE_BACK, back) returns a job that failed, behind its stream's newer batches;
- `requeue_dead` (REQUEUE_DEAD) returns the jobs of a worker whose lease ran out (or that ended);
- `settle` (SETTLE, via Publisher) publishes a batch's results and counts its frames exactly once;
- `fail` writes RQ's failed records and takes the job out of flight in one MULTI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from common import keys, scripts
from common.redis_client import describe

from . import rq_compat

log = logging.getLogger(__name__)

#: While Redis refuses writes (full, read-only), a held job is offered back with backoff up to
#: this pause, so the fleet resumes within half a second of memory being freed.
RETRY_MAX_S = 0.5


@dataclass(frozen=True)
class Taken:
    """One job a fetch moved into this worker's in-flight hash."""

    queue_key: str
    job_id: str


class RedisBroker:
    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.name = name
        self.inflight = keys.inflight(name)
        self._dequeue = scripts.DEQUEUE.bind(client)
        self._give_back = scripts.GIVE_BACK.bind(client)

    # -- taking -------------------------------------------------------------------------------
    def fetch(self, n: int, queue_keys: list[str], peers: Sequence[str] = ()) -> list[Taken]:
        """Up to `n` jobs, deepest queue first (ties: the order given). `peers`: a prefetch takes
        nothing while one of these workers is alive and idle. [] when suspended (`rq suspend`)."""
        if not queue_keys:
            return []
        peer_keys = [k for w in peers for k in (keys.worker_alive(w), keys.rq_worker(w))]
        got = self._dequeue(
            keys=[self.inflight, keys.RQ_SUSPENDED, *peer_keys, *queue_keys],
            args=[n, len(peers), rq_compat.STATE_FIELD, rq_compat.IDLE],
        )
        if not got:
            return []
        return [Taken(got[i].decode(), got[i + 1].decode()) for i in range(0, len(got), 2)]

    def read_jobs(self, job_ids: list[str]) -> list[tuple[object, object]]:
        """Each job's raw hash and kill count, in one round trip (a reply that is an error, e.g. a
        key that is not a hash, comes back as the exception)."""
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.rq_job(job_id))
                pipe.get(keys.kills(job_id))
            replies = pipe.execute(raise_on_error=False)
        return list(zip(replies[::2], replies[1::2], strict=True))

    def forget(self, job_id: str) -> None:
        """A job taken that is not there to run (gone, refused elsewhere): out of flight."""
        self.client.hdel(self.inflight, job_id)

    # -- giving back --------------------------------------------------------------------------
    def give_back(
        self, taken: Taken, members: Sequence[str] = (), *, front: bool = True, stop: Callable[[], bool] | None = None
    ) -> bool:
        """A held job back in its queue (front: it runs next; back: a retry). Retried while Redis
        refuses writes, until `stop()` says the worker is going (teardown then requeues it).
        False when it was not held (any more)."""
        delay, t0, said = 0.05, time.monotonic(), False
        while True:
            try:
                moved = self._give_back(
                    keys=[
                        self.inflight,
                        taken.queue_key,
                        keys.rq_started(taken.queue_key),
                        keys.rq_job(taken.job_id),
                    ],
                    args=[
                        taken.job_id,
                        "front" if front else "back",
                        " ".join(members),
                        rq_compat.STATUS_FIELD,
                        rq_compat.QUEUED,
                    ],
                )
            except redis.RedisError as exc:
                if stop is not None and stop():
                    return False
                if not said:
                    log.warning(
                        "worker %s: %s; holding job %s until it is back", self.name, describe(exc), taken.job_id
                    )
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if said:
                log.warning("worker %s: job %s back after %.1f s", self.name, taken.job_id, time.monotonic() - t0)
            return bool(moved)

    def retry(self, taken: Taken, members: Sequence[str] = (), *, stop: Callable[[], bool] | None = None) -> bool:
        """A job that failed, to the back of its queue (a failing batch never blocks its stream)."""
        return self.give_back(taken, members, front=False, stop=stop)

    def requeue_dead(self, name: str, *, force: bool, died: bool = False) -> list[str]:
        """Put a worker's in-flight jobs back at the front of their queues (only if its lease ran
        out, unless forced); returns the job ids. `died`: the worker died holding them (killed,
        crashed, lease lost), which counts against each job: past the attempts policy's limit of
        deaths the job is a poison batch."""
        return requeue_dead(self.client, name, force=force, died=died)


def requeue_dead(client: redis.Redis, name: str, *, force: bool, died: bool = False) -> list[str]:
    """See RedisBroker.requeue_dead (also run by the supervisor and the lease reaper)."""
    alive_key, inflight = keys.worker_alive(name), keys.inflight(name)
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(alive_key)
        pipe.hgetall(inflight)
        alive, held = pipe.execute()
    if not held or (alive and not force):
        return []
    jobs = [(k.decode(), q.decode()) for k, q in held.items()]
    by_queue: dict[str, list[str]] = {}
    for job_id, queue_key in jobs:
        by_queue.setdefault(queue_key, []).append(job_id)
    members: dict[str, list[str]] = {}
    for queue_key, ids in by_queue.items():
        members.update(rq_compat.started_members(client, queue_key, ids))
    script_keys, args = [alive_key, inflight], ["1" if force else "0", "1" if died else "0", keys.KILLS_TTL_S]
    for job_id, queue_key in jobs:
        script_keys += [queue_key, keys.rq_started(queue_key), keys.kills(job_id)]
        args += [job_id, " ".join(members.get(job_id, []))]
    ids = scripts.REQUEUE_DEAD.bind(client)(keys=script_keys, args=args)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]
