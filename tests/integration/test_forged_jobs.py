"""Forged RQ jobs against a real worker process: callbacks, foreign blobs, missing kwargs,
dependencies, retries and meta are refused (counted, reason in the failed registry) before anything
is imported or run, the worker keeps going, and real streams' ledgers balance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus

from common import keys
from common.wire import JobArgs, MsgpackSerializer, packb

from ..helpers import wait_for
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(90)

FUNC = "worker.jobs.process_batch"
MARK = "tests.integration.forged_callback.leave_mark"
SLEEP = ("worker", "--detector", "sleep", "--sleep-ms", "20", "--preload", "")


def _queue(r, stream: str) -> Queue:
    return Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)


def _start_worker(r, procs):
    proc = procs.rtai(*SLEEP)
    wait_for(lambda: r.scard(keys.WORKERS) == 1, timeout=30, what="the worker to register")
    return proc


def _rejected(r) -> int:
    return int(r.hget(keys.FLEET, "rejected_jobs") or 0)


def _refused(r, job: Job) -> str:
    """The reason a forged job was refused, once the worker has refused it."""
    failed = JobStatus.FAILED.value.encode()
    wait_for(lambda: r.hget(job.key, "status") == failed, timeout=20, what=f"job {job.id} refused")
    result = job.latest_result()
    assert result is not None
    assert job.id in _queue(r, job.origin.removeprefix(keys.PREFIX)).failed_job_registry.get_job_ids()
    return result.exc_string


def _assert_worker_alive(r, proc) -> None:
    assert proc.poll() is None, "the worker died"
    (name,) = (n.decode() for n in r.smembers(keys.WORKERS))
    assert r.exists(keys.worker_alive(name))
    wait_for(lambda: r.hlen(keys.inflight(name)) == 0, timeout=5, what="nothing left in flight")


def test_callbacks_are_never_imported_or_called(r, procs, tmp_path: Path):
    proc = _start_worker(r, procs)
    s = sink(r, "cam1")
    marks = [tmp_path / "success", tmp_path / "failure", tmp_path / "stopped"]
    args = JobArgs.for_batch("cam1", 1, 4).to_kwargs()  # a real batch's own kwargs
    forged = [
        _queue(r, "cam1").enqueue_call(FUNC, kwargs=args, description=str(marks[0]), on_success=Callback(MARK)),
        _queue(r, "cam1").enqueue_call(FUNC, kwargs=args, description=str(marks[1]), on_failure=Callback(MARK)),
        _queue(r, "cam1").enqueue_call(FUNC, kwargs=args, description=str(marks[2]), on_stopped=Callback(MARK)),
    ]
    assert s.push(frames(4))  # cam1#1 itself, after the forgeries
    reasons = [_refused(r, job) for job in forged]
    assert "on_success callback" in reasons[0]
    assert "on_failure callback" in reasons[1]
    assert "on_stopped callback" in reasons[2]
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=20, what="the real batch published")
    assert not any(m.exists() for m in marks), "a forged callback ran"
    assert _rejected(r) == 3
    assert counts(r, "cam1")["in_flight"] == 0
    _assert_worker_alive(r, proc)


def test_blob_pointing_at_another_streams_ledger_is_refused(r, procs):
    proc = _start_worker(r, procs)
    sink(r, "cam1")  # the attacker's queue is a stream the fleet serves
    victim = sink(r, "cam2")
    # cam2's next batch is #1: a forged job claims it, with its "blob" at cam2's ledger.
    forged = _queue(r, "cam1").enqueue_call(
        FUNC, kwargs={"stream": "cam2", "batch": 1, "blob": keys.ledger("cam2"), "n": 4}
    )
    reason = _refused(r, forged)
    assert "rtai:ledger:cam2" in reason and "is not batch cam2#1's key" in reason
    assert victim.push(frames(4))
    wait_for(lambda: counts(r, "cam2")["published"] == 4, timeout=20, what="cam2's real batch published")
    c = counts(r, "cam2")
    assert (c["produced"], c["failed"], c["in_flight"]) == (4, 0, 0), c
    assert set(r.hkeys(keys.ledger("cam2"))) <= {b"produced", b"published"}, "the ledger was written to"
    assert _rejected(r) == 1
    _assert_worker_alive(r, proc)


def test_job_without_kwargs_is_refused_cleanly(r, procs):
    proc = _start_worker(r, procs)
    s = sink(r, "cam1")
    q = _queue(r, "cam1")
    empty = q.enqueue_call(FUNC)  # kwargs {}
    none = q.enqueue_call(FUNC)
    r.hset(none.key, "data", packb([FUNC, None, [], None]))  # kwargs missing altogether
    three = q.enqueue_call(FUNC)
    r.hset(three.key, "data", packb([FUNC, None]))  # not even four fields
    args = JobArgs.for_batch("cam1", 1, 4).to_kwargs()
    as_bool = q.enqueue_call(FUNC, kwargs={**args, "n": True})
    positional = q.enqueue_call(FUNC, args=[1], kwargs=args)
    assert "missing ['batch', 'blob', 'n', 'stream']" in _refused(r, empty)
    assert "expected a map, got NoneType" in _refused(r, none)
    assert "not [function, instance, args, kwargs]" in _refused(r, three)
    assert "field 'n' has type bool" in _refused(r, as_bool)
    assert "positional args" in _refused(r, positional)
    assert s.push(frames(4))
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=20, what="a good batch after the bad ones")
    assert counts(r, "cam1")["in_flight"] == 0
    assert _rejected(r) == 5
    _assert_worker_alive(r, proc)


def test_dependencies_retries_meta_and_webhooks_are_refused(r, procs):
    proc = _start_worker(r, procs)
    s = sink(r, "cam1")
    q = _queue(r, "cam1")
    args = JobArgs.for_batch("cam1", 1, 4).to_kwargs()
    depends = q.enqueue_call(FUNC, kwargs=args)
    r.hset(depends.key, mapping={"dependency_ids": json.dumps(["x"]), "dependency_id": "x"})
    retry = q.enqueue_call(FUNC, kwargs=args, retry=Retry(max=3))
    meta = q.enqueue_call(FUNC, kwargs=args, meta={"owner": "me"})
    hooks = q.enqueue_call(FUNC, kwargs=args)
    r.hset(hooks.key, "webhooks", json.dumps([{"url": "http://127.0.0.1:1/hook"}]))
    elsewhere = q.enqueue_call(FUNC, kwargs=JobArgs.for_batch("cam9", 1, 4).to_kwargs())
    assert "dependencies" in _refused(r, depends)
    assert "an RQ Retry" in _refused(r, retry)
    assert "meta" in _refused(r, meta)
    assert "webhooks" in _refused(r, hooks)
    assert "job for stream 'cam9' was found on queue 'rq:queue:rtai:cam1'" in _refused(r, elsewhere)
    assert s.push(frames(4))
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=20, what="the real batch published")
    assert counts(r, "cam1")["in_flight"] == 0
    assert _rejected(r) == 5
    _assert_worker_alive(r, proc)


def test_malformed_job_hashes_never_stop_the_worker(r, procs):
    proc = _start_worker(r, procs)
    s = sink(r, "cam1")
    q = _queue(r, "cam1")
    args = JobArgs.for_batch("cam1", 1, 4).to_kwargs()
    timeout = q.enqueue_call(FUNC, kwargs=args)
    r.hset(timeout.key, "timeout", "forever")
    status = q.enqueue_call(FUNC, kwargs=args)
    r.hset(status.key, "status", "owned")
    date = q.enqueue_call(FUNC, kwargs=args)
    r.hset(date.key, "created_at", "yesterday")
    r.set("rq:job:not-a-hash", "x")
    r.rpush(q.key, "not-a-hash")
    assert "timeout is b'forever', not an integer" in _refused(r, timeout)
    assert "'owned' is not an RQ status" in _refused(r, status)
    assert "job hash does not restore" in _refused(r, date)
    assert s.push(frames(4))
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=20, what="the real batch published")
    assert _rejected(r) == 4
    _assert_worker_alive(r, proc)
