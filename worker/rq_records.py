"""RQ's records of a job's start and of its success, as RQ 3 writes them, queued on one pipeline each.

RQ's SimpleWorker spends about ten round trips a job on its bookkeeping (two pipelines to start it,
a heartbeat, WATCH + SMEMBERS + MULTI/EXEC to finish it, the idle state, a three-command worker
heartbeat). The fleet's jobs never have dependents, callbacks, repeats, retries or webhooks
(worker/admission.py refuses them before a job runs), so FleetWorker writes the same keys and
fields in one pipeline when a job starts and one when it succeeds; `rq info`, `Job.get_status()`,
`job.latest_result()`, the registries and the worker's counts read what RQ itself would have left.

| RQ 3.0.0 (worker/base.py, executions.py, job.py)    | written by     |
|-----------------------------------------------------|----------------|
| prepare_execution: Execution.create, state busy     | record_start   |
| prepare_job_execution: worker heartbeat, job started | record_start   |
|   and persisted (the intermediate-queue LREM is      |                |
|   left out: the fleet's dequeue never uses one)      |                |
| handle_execution_ended: job ended_at, last_heartbeat | record_success |
| handle_job_success: job finished, Result, finished   | record_success |
|   registry, job TTL, execution cleanup, worker       |                |
|   successful_job_count and total_working_time        |                |
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.results import Result
from rq.utils import now, utcformat
from rq.worker import BaseWorker, WorkerStatus

if TYPE_CHECKING:
    from redis.client import Pipeline


def record_start(pipe: Pipeline, worker: BaseWorker, job: Job) -> Execution:
    """RQ's prepare_execution and prepare_job_execution for `job`, queued on `pipe`: the execution
    (its hash, the job's execution registry, the started registry, the worker's executions set),
    the worker busy with its heartbeat, the job started (status, started_at, worker_name,
    last_heartbeat) and persisted while it runs."""
    ttl = worker.get_heartbeat_ttl(job)
    execution = Execution.create(job, ttl, pipeline=pipe, worker_name=worker.name)
    worker.executions[execution.id] = execution
    worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
    worker.heartbeat(ttl, pipeline=pipe)
    job.prepare_for_execution(worker.name, pipeline=pipe)
    pipe.persist(job.key)
    return execution


def record_success(
    pipe: Pipeline,
    job: Job,
    queue: Queue,
    return_value: Any,
    *,
    worker_name: str,
    result_ttl: int,
    execution: Execution | None = None,
) -> None:
    """RQ's records of a job that returned `return_value`, queued on `pipe`: the job finished
    (status, ended_at, last_heartbeat), its Result (worker, return value, execution), its entry in
    the finished registry, its key's TTL, and its execution's cleanup. `result_ttl` is not 0 (RQ
    deletes such a job at once: the caller leaves that to RQ)."""
    job.ended_at = job.ended_at or now()
    job.last_heartbeat = job.ended_at  # RQ's handle_execution_ended: both at the job's end
    job._status = JobStatus.FINISHED
    ended_at = utcformat(job.ended_at)
    pipe.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": ended_at, "last_heartbeat": ended_at})
    Result.create(
        job,
        Result.Type.SUCCESSFUL,
        ttl=result_ttl,
        return_value=return_value,
        worker_name=worker_name,
        pipeline=pipe,
        execution_id=execution.id if execution is not None else None,
        execution_started_at=execution.created_at if execution is not None else None,
        execution_ended_at=job.ended_at,
    )
    queue.finished_job_registry.add(job, result_ttl, pipeline=pipe)
    if result_ttl > 0:  # negative: kept for ever, as RQ's job.cleanup leaves it
        pipe.expire(job.key, result_ttl)
    if execution is not None:
        execution.delete(job=job, pipeline=pipe)
