"""A producer's batch in one round trip (producer/enqueue.py, common/scripts.py ENQUEUE): the job is
the record RQ's own enqueue writes, batch numbers and seqs are never handed out twice when two
producers share a stream, and the queue bound still drops whole batches, counted."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from common import keys, ledger
from common.wire import MsgpackSerializer, decode_batch

from .fleet import counts, frames, sink

#: Job-hash fields that differ between any two jobs (times, ids, the payload naming the batch).
VARYING = {b"created_at", b"enqueued_at", b"data", b"description"}


def _calls(r, command: str) -> int:
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.timeout(30)
def test_a_batch_is_one_round_trip_and_its_job_is_what_rqs_enqueue_writes(r):
    s = sink(r, "cam-a", batch_size=2)
    assert s.push(frames(2))  # the first batch: numbered by two round trips, queued by RQ's enqueue_call
    assert s.push(frames(2))  # the second: the script (loaded now)
    r.config_resetstat()
    for _ in range(3):
        assert s.push(frames(2))
    stats = r.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3, "one script call a batch"
    assert "cmdstat_multi" not in stats and "cmdstat_exec" not in stats, "no second round trip"

    q = Queue(keys.queue_name("cam-a"), connection=r, serializer=MsgpackSerializer)
    assert q.count == 5 and q in Queue.all(connection=r), "rq info counts every queued batch"
    ids = q.get_job_ids()
    by_rq, *by_script = (r.hgetall(keys.rq_job(i)) for i in ids)
    for record in by_script:
        assert {k: v for k, v in record.items() if k not in VARYING} == {
            k: v for k, v in by_rq.items() if k not in VARYING
        }, "the script writes the same job record as RQ's enqueue"
    for number, job_id in enumerate(ids, start=1):
        job = Job.fetch(job_id, connection=r, serializer=MsgpackSerializer)
        assert job.get_status() == JobStatus.QUEUED and job.origin == q.name and job.enqueued_at
        assert job.func_name == "worker.jobs.process_batch"
        assert job.kwargs["batch"] == number and job.description == f"cam-a#{number} (2 frames)"
        batch = decode_batch(r.get(job.kwargs["blob"]))
        assert [f.seq for f in batch.frames] == [2 * number - 2, 2 * number - 1]
    assert counts(r, "cam-a")[ledger.PRODUCED] == 10


@pytest.mark.timeout(30)
def test_two_producers_on_one_stream_never_share_a_number(r):
    a, b = sink(r, "cam-b"), sink(r, "cam-b")
    for _ in range(4):  # interleaved: each finds the counters moved by the other and numbers again
        assert a.push(frames(1))
        assert b.push(frames(1))
        assert a.push(frames(1))
    q = Queue(keys.queue_name("cam-b"), connection=r, serializer=MsgpackSerializer)
    jobs = [Job.fetch(i, connection=r, serializer=MsgpackSerializer) for i in q.get_job_ids()]
    numbers = [j.kwargs["batch"] for j in jobs]
    seqs = [decode_batch(r.get(j.kwargs["blob"])).frames[0].seq for j in jobs]
    assert numbers == list(range(1, 13)) and seqs == list(range(12))
    assert counts(r, "cam-b")[ledger.PRODUCED] == 12


@pytest.mark.timeout(30)
def test_over_the_bound_a_batch_is_dropped_and_counted_in_the_same_step(r):
    s = sink(r, "cam-c", batch_size=2, queue_bound=2)
    assert s.push(frames(2)) and s.push(frames(2))
    assert not s.push(frames(2)) and not s.push(frames(2))
    c = counts(r, "cam-c")
    assert c[ledger.PRODUCED] == 8 and c["dropped_backpressure"] == 4 and c["in_flight"] == 4
    assert r.llen(keys.queue_key("cam-c")) == 2
    # numbers dropped are spent: the next batch queued after a worker took one is numbered 5
    r.lpop(keys.queue_key("cam-c"))
    assert s.push(frames(2))
    last = Job.fetch(r.lrange(keys.queue_key("cam-c"), -1, -1)[0].decode(), connection=r, serializer=MsgpackSerializer)
    assert last.kwargs["batch"] == 5
