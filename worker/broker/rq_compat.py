"""RQ's records, kept true by a worker that runs its own job loop (worker/loop.py).

Producers enqueue plain RQ jobs, and operators read the fleet with RQ's tools: `rq info`,
`Job.fetch(...).get_status()`, `job.latest_result()`, the started / finished / failed registries,
`rq suspend`. The fleet's worker does not run RQ's loop (it takes several jobs a step, holds them
in its own in-flight hash and settles them in Lua), so this adapter writes what RQ's own worker
would have left, through RQ's public API: a `Worker` object used only as the record of this
worker (birth, death, state, heartbeat, counts), `Execution`, `Result` and the registries.
tests/integration/test_rq_compat.py reads all of it back through RQ's public API, so an RQ upgrade
that changes the contract fails loudly.

| RQ 3.0 (what its worker writes)                         | here            |
|---------------------------------------------------------|-----------------|
| register_birth / register_death, per-queue worker sets  | WorkerRecord    |
| heartbeat, state busy/idle                              | WorkerRecord    |
| prepare_execution + prepare_job_execution: Execution,   | record_start    |
|   started registry, job started (status, started_at,    |                 |
|   worker_name, last_heartbeat), job persisted           |                 |
| handle_job_success: job finished, Result, finished      | record_success  |
|   registry, job TTL, execution cleanup, worker counts   | (counts: ended) |
| handle_job_failure: job failed, Result, failed registry | record_failure  |
"""

from __future__ import annotations

import time
import zlib
from typing import TYPE_CHECKING, Any

from rq import Queue, worker_registration
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.utils import now, utcformat
from rq.worker import SimpleWorker, WorkerStatus

from common.wire import MsgpackSerializer

if TYPE_CHECKING:
    import redis
    from redis.client import Pipeline

#: RQ's worker-hash field that says whether a worker is idle, and its value (read by the DEQUEUE
#: script of a prefetch: it takes nothing while a live peer is idle).
STATE_FIELD = "state"
IDLE = WorkerStatus.IDLE.value
#: RQ's job-hash status field and the value of a job back in its queue (the GIVE_BACK script).
STATUS_FIELD = "status"
QUEUED = JobStatus.QUEUED.value
#: A job refused, poison or failed is kept a day for `rq info` and post-mortems.
FAILURE_TTL_S = 86_400
#: The default result TTL RQ's worker applies to a job that sets none.
DEFAULT_RESULT_TTL_S = 500
#: RQ's heartbeat of the worker record, at most this often. Its TTL is minutes (the job timeout
#: plus a minute while busy, RQ's worker_ttl while idle), so a beat a second keeps the record alive
#: and `rq info`'s last_heartbeat within a second, without three commands on every group's start
#: and end (issue 19, part 3).
BEAT_EVERY_S = 1.0


def queue_for(queue_key: str, client: redis.Redis) -> Queue:
    return Queue.from_queue_key(queue_key, connection=client, serializer=MsgpackSerializer)


def started_members(client: redis.Redis, queue_key: str, job_ids: list[str]) -> dict[str, list[str]]:
    """The started-registry members (RQ's `job:execution` entries) of these jobs in one queue."""
    registry = StartedJobRegistry(queue=queue_for(queue_key, client))
    wanted = set(job_ids)
    out: dict[str, list[str]] = {job_id: [] for job_id in job_ids}
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        if job_id in wanted:
            out[job_id].append(f"{job_id}:{execution_id}")
    return out


class WorkerRecord:
    """This worker as RQ lists it (`rq info`, `Worker.all`). RQ's Worker object is used for its
    record-writing methods only; its work loop never runs."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        kwargs = client.connection_pool.connection_kwargs
        timeout = kwargs.get("socket_timeout")
        self.rq = SimpleWorker([], connection=client, name=name, serializer=MsgpackSerializer)
        # RQ's Worker raises the pool's socket timeout to 415 s for its blocking dequeue, which this
        # fleet never runs (its dequeue is a script that answers at once). Kept, one read from a Redis
        # cut off by a partition held the worker 415 s (tests/chaos/test_sentinel_partition.py).
        if kwargs.get("socket_timeout") != timeout:
            kwargs["socket_timeout"] = timeout
            client.connection_pool.reset()  # connections made meanwhile took the long timeout too
        self.key = self.rq.key
        self._beat_at = float("-inf")

    def birth(self, queue_keys: list[str]) -> None:
        """Register this worker; a record of the same name left by a process that is gone (its
        death never written: killed, or Redis was full) is replaced."""
        self.client.delete(self.key)
        self.rq.queues = [queue_for(k, self.client) for k in queue_keys]
        self.rq.register_birth()

    def death(self) -> None:
        self.rq.register_death()

    def set_queues(self, old: list[str], new: list[str]) -> None:
        """The queues this worker listens on, in its hash and RQ's per-queue worker sets."""
        self.rq.queues = [queue_for(k, self.client) for k in new]
        names = [q.name for q in self.rq.queues]
        old_names = [queue_for(k, self.client).name for k in old]
        with self.client.pipeline() as pipe:
            pipe.hset(self.key, "queues", ",".join(names))
            for name in set(old_names) - set(names):
                pipe.srem(worker_registration.WORKERS_BY_QUEUE_KEY % name, self.key)
            for name in names:
                pipe.sadd(worker_registration.WORKERS_BY_QUEUE_KEY % name, self.key)
            pipe.execute()

    def heartbeat(self, pipe: Pipeline | None = None, ttl: int | None = None) -> None:
        self.rq.heartbeat(ttl, pipeline=pipe)
        self._beat_at = time.monotonic()

    def beat_due(self) -> bool:
        """The last heartbeat is BEAT_EVERY_S old (or there was none)."""
        return time.monotonic() - self._beat_at >= BEAT_EVERY_S

    def set_state(self, state: WorkerStatus, pipe: Pipeline | None = None) -> None:
        self.rq.set_state(state, pipeline=pipe)

    def record_start(self, pipe: Pipeline, job: Job) -> Execution:
        """RQ's prepare_execution and prepare_job_execution for `job`, queued on `pipe`."""
        ttl = self.rq.get_heartbeat_ttl(job)
        execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.rq.name)
        job.prepare_for_execution(self.rq.name, pipeline=pipe)
        pipe.persist(job.key)
        return execution

    def started(self, pipe: Pipeline, ttl: int) -> None:
        """The worker busy (once a group), with RQ's heartbeat when one is due."""
        self.rq.set_state(WorkerStatus.BUSY, pipeline=pipe)
        if self.beat_due():
            self.heartbeat(pipe, ttl)

    def ended(self, pipe: Pipeline, jobs: int, working_s: float) -> None:
        """The worker idle after a group, with RQ's counts of the `jobs` that finished in it
        (`working_s` seconds between them; one HINCRBY each, as RQ's increment_successful_job_count
        and increment_total_working_time write them one job at a time) and RQ's heartbeat when due."""
        if jobs:
            pipe.hincrby(self.key, "successful_job_count", jobs)
            pipe.hincrbyfloat(self.key, "total_working_time", working_s)
        self.rq.set_state(WorkerStatus.IDLE, pipeline=pipe)
        if self.beat_due():
            self.heartbeat(pipe)

    def record_success(
        self, pipe: Pipeline, job: Job, queue_key: str, return_value: Any, execution: Execution | None
    ) -> float:
        """RQ's records of a job that returned `return_value`, queued on `pipe`; the seconds it
        worked, for the worker's counts (`ended`, once a group)."""
        ttl = job.get_result_ttl(DEFAULT_RESULT_TTL_S)
        job.ended_at = now()
        job.last_heartbeat = job.ended_at
        ended_at = utcformat(job.ended_at)
        if ttl == 0:  # no result kept: finished, and gone in a second (RQ deletes it)
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": ended_at})
            pipe.expire(job.key, 1)
        else:
            pipe.hset(
                job.key,
                mapping={"status": JobStatus.FINISHED.value, "ended_at": ended_at, "last_heartbeat": ended_at},
            )
            Result.create(
                job,
                Result.Type.SUCCESSFUL,
                ttl=ttl,
                return_value=return_value,
                worker_name=self.rq.name,
                pipeline=pipe,
                execution_id=execution.id if execution is not None else None,
                execution_started_at=execution.created_at if execution is not None else None,
                execution_ended_at=job.ended_at,
            )
            queue_for(queue_key, self.client).finished_job_registry.add(job, ttl, pipeline=pipe)
            if ttl > 0:  # negative: kept for ever, as RQ's job.cleanup leaves it
                pipe.expire(job.key, ttl)
        if execution is not None:
            execution.delete(job=job, pipeline=pipe)
            if job.started_at is not None:
                return (job.ended_at - job.started_at).total_seconds()
        return 0.0

    def record_failure(
        self,
        pipe: Pipeline,
        job: Job,
        queue_key: str,
        message: str,
        execution: Execution | None = None,
        *,
        ttl: int = FAILURE_TTL_S,
    ) -> None:
        """A job failed with `message`, in its queue's failed registry for `ttl` seconds, writing only
        the status fields: a forged hash is never saved back through RQ, nor needs to restore."""
        registry = FailedJobRegistry(queue=queue_for(queue_key, self.client), serializer=MsgpackSerializer)
        pipe.hset(
            job.key,
            mapping={
                "status": JobStatus.FAILED.value,
                "ended_at": utcformat(now()),
                "exc_info": zlib.compress(message.encode()),
            },
        )
        pipe.expire(job.key, ttl)
        pipe.zadd(registry.key, {job.id: int(time.time()) + ttl})
        Result.create_failure(job, ttl, message, worker_name=self.rq.name, pipeline=pipe)
        if execution is not None:
            execution.delete(job=job, pipeline=pipe)
            self.rq.increment_failed_job_count(pipeline=pipe)
