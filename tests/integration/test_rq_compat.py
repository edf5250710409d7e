"""The worker's own loop keeps RQ's records true (worker/broker/rq_compat.py): what a user of
`rq info` and RQ's public API reads is what RQ's own worker would have left. Read through RQ's
public API only, so an RQ upgrade that changes the contract fails here."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from rq import Queue, Worker
from rq.executions import ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from common import keys, ledger
from common.wire import MsgpackSerializer
from producer.enqueue import RESULT_TTL_S

from ..helpers import wait_for
from .fleet import counts, frames, sink

JOBS = 6


@pytest.mark.timeout(30)
def test_rq_records_of_jobs_run_through_the_lean_path(r, redis_server, procs):
    s = sink(r, "cam-a")
    for _ in range(JOBS):
        assert s.push(frames(2))
    q = Queue(keys.queue_name("cam-a"), connection=r, serializer=MsgpackSerializer)
    ids = q.get_job_ids()
    assert len(ids) == JOBS
    # One job a detector call (no dynamic batching): every job goes through RQ's own execution.
    proc = procs.rtai("worker", "--detector", "noop", "--preload", "", "--name", "w1", "--max-batch-frames", "2")
    wait_for(lambda: counts(r, "cam-a")["published"] == 2 * JOBS, timeout=20, what="every frame published")
    wait_for(lambda: r.hlen(keys.inflight("w1")) == 0, timeout=5, what="the in-flight hash to empty")

    # Each frame's latency went into the histogram with its job's records.
    assert ledger.read_latency_hist(r, "cam-a")["count"] == 2 * JOBS
    finished = set(FinishedJobRegistry(queue=q).get_job_ids())
    assert finished == set(ids)
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    for job_id in ids:
        job = Job.fetch(job_id, connection=r, serializer=MsgpackSerializer)
        assert job.get_status() == JobStatus.FINISHED
        assert job.worker_name == "w1" and job.started_at and job.ended_at and job.ended_at >= job.started_at
        assert 0 < r.ttl(job.key) <= RESULT_TTL_S
        result = job.latest_result()
        assert result is not None and result.type == result.Type.SUCCESSFUL
        assert result.worker_name == "w1"
        assert result.return_value == {"status": "settled", "published": 2, "stale": 0}
        assert result.execution_id, "the result names the execution that ran the job"
        assert not r.exists(f"rq:execution:{job_id}:{result.execution_id}"), "the execution is cleaned up"
        assert ExecutionRegistry(job_id, connection=r).get_execution_ids() == []

    worker = Worker.find_by_key("rq:worker:w1", connection=r)
    assert worker is not None
    assert worker.get_state() == "idle"
    assert (worker.successful_job_count, worker.failed_job_count) == (JOBS, 0)
    assert worker.total_working_time > 0
    # RQ's heartbeat, at most once a second (not on every group): still within a second or two.
    beat = worker.last_heartbeat
    assert beat is not None and (datetime.now(UTC) - beat.replace(tzinfo=UTC)).total_seconds() < 2.5
    assert r.ttl(worker.key) > 60, "the worker record outlives any job by far"
    assert worker.get_current_job_id() is None
    assert not r.smembers("rq:worker:w1:executions")
    # `rq info` lists the queue's jobs finished and the worker on its queue with its count.
    out = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "--url", redis_server],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    ).stdout
    assert "rtai:cam-a   | 0, 0 executing, 6 finished, 0 failed" in out, out
    assert f"): idle rtai:cam-a. jobs: {JOBS} finished, 0 failed" in out and "w1 (" in out, out
    assert "1 workers, 1 queues" in out, out
    proc.terminate()
    assert procs.finish(proc) == 0, procs.output(proc)


@pytest.mark.timeout(40)
def test_rq_records_of_a_failed_job_and_of_rq_suspend(r, redis_server, procs):
    """A job whose batch is gone fails as RQ would record it (status, result, failed registry,
    the worker's failed count), and `rq suspend` / `rq resume` pause and resume the worker."""
    s = sink(r, "cam-b")
    assert s.push(frames(2))
    q = Queue(keys.queue_name("cam-b"), connection=r, serializer=MsgpackSerializer)
    (gone,) = q.get_job_ids()
    r.delete(keys.batch_blob("cam-b", 1))  # expired before a worker came: its frames fail, counted
    rq_cli = [sys.executable, "-m", "rq.cli"]
    subprocess.run([*rq_cli, "suspend", "--url", redis_server], check=True, timeout=15, capture_output=True)
    proc = procs.rtai("worker", "--detector", "noop", "--preload", "", "--name", "w2")
    wait_for(lambda: Worker.find_by_key("rq:worker:w2", connection=r), timeout=20, what="the worker registered")
    wait_for(lambda: r.exists(keys.worker_alive("w2")), timeout=10, what="the worker's lease")
    time.sleep(1.0)
    assert q.count == 1 and counts(r, "cam-b")["failed"] == 0, "suspended: nothing taken"
    subprocess.run([*rq_cli, "resume", "--url", redis_server], check=True, timeout=15, capture_output=True)
    wait_for(lambda: counts(r, "cam-b")["failed"] == 2, timeout=10, what="the gone batch counted failed")
    assert s.push(frames(2))
    wait_for(lambda: counts(r, "cam-b")["published"] == 2, timeout=10, what="the next batch published")

    job = Job.fetch(gone, connection=r, serializer=MsgpackSerializer)
    wait_for(lambda: job.get_status() == JobStatus.FAILED, timeout=5, what="the job failed in RQ's records")
    assert gone in FailedJobRegistry(queue=q).get_job_ids()
    result = job.latest_result()
    assert result is not None and result.type == result.Type.FAILED and "is gone" in (result.exc_string or "")
    worker = Worker.find_by_key("rq:worker:w2", connection=r)
    assert worker is not None and worker.queue_names() == [keys.queue_name("cam-b")]
    assert (worker.successful_job_count, worker.failed_job_count) == (1, 1)
    assert StartedJobRegistry(queue=q).get_job_ids() == []
    proc.terminate()
    assert procs.finish(proc) == 0, procs.output(proc)
    assert Worker.find_by_key("rq:worker:w2", connection=r) is None or r.hexists("rq:worker:w2", "death")


def test_the_worker_record_keeps_the_fleets_socket_timeout(redis_server):
    """RQ's Worker raises its connection's socket timeout to 415 s for a blocking dequeue this fleet
    never runs; kept, one read from a Redis cut off by a partition held a worker that long."""
    from common.redis_client import SOCKET_TIMEOUT_S, connect  # noqa: PLC0415
    from worker.broker.rq_compat import WorkerRecord  # noqa: PLC0415

    client = connect(redis_server)
    WorkerRecord(client, "timeout-probe")
    assert client.connection_pool.connection_kwargs["socket_timeout"] == SOCKET_TIMEOUT_S
    client.ping()
    conn = client.connection_pool.get_connection()
    try:
        assert conn.socket_timeout == SOCKET_TIMEOUT_S
    finally:
        client.connection_pool.release(conn)
