"""Dynamic batching: with a backlog across streams, one worker runs several queued jobs in one
detector call, settles each on its own (every frame published once, the ledger balanced), and a
kill while it holds several requeues them all."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry

from common import keys, ledger
from common.wire import MsgpackSerializer, decode_result

from ..helpers import wait_for
from .fleet import counts, frames, sink

STREAMS = ("cam-a", "cam-b")


def _backlog(r, jobs_per_stream: int, n: int) -> None:
    for stream in STREAMS:
        s = sink(r, stream)
        for _ in range(jobs_per_stream):
            assert s.push(frames(n))


def _published_once(r, stream: str, n: int) -> None:
    c = counts(r, stream)
    seqs = [decode_result(f[b"r"]).seq for _id, f in r.xrange(keys.history(stream))]
    assert len(seqs) == len(set(seqs)), "a frame was published twice"
    assert c["produced"] == c["published"] == len(seqs) == n, c
    assert c["in_flight"] == 0 and c["failed"] == 0 and ledger.dropped(c) == 0, c


@pytest.mark.timeout(60)
def test_backlog_across_streams_runs_in_fewer_detector_calls(r, procs):
    _backlog(r, jobs_per_stream=6, n=2)  # 12 jobs of 2 frames; the limit is 8 frames: 4 jobs a call
    proc = procs.rtai("worker", "--burst", "--detector", "sleep", "--sleep-ms", "5", "--preload", "", "--name", "w1")
    assert procs.finish(proc) == 0, procs.output(proc)
    for stream in STREAMS:
        _published_once(r, stream, 12)
    stats = r.hgetall(keys.worker("w1"))
    calls, infer_frames = int(stats[b"infer_calls"]), int(stats[b"infer_frames"])
    assert infer_frames == 24
    assert calls <= 4, f"{calls} detector calls for 12 jobs"  # 1 (learning the job size) + 3 of 4 jobs
    # A call mixes the streams (the deepest queue first, ties in turn).
    done = {}
    for stream in STREAMS:
        for _id, f in r.xrange(keys.history(stream)):
            done.setdefault(decode_result(f[b"r"]).t_done, set()).add(stream)
    assert any(len(s) == 2 for s in done.values()), done
    # RQ's records tell the truth for every job, the ones that rode along included.
    for stream in STREAMS:
        q = Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
        finished = FinishedJobRegistry(queue=q).get_job_ids()
        assert len(finished) == 6, finished
        assert all(
            Job.fetch(i, connection=r, serializer=MsgpackSerializer).get_status() == JobStatus.FINISHED
            for i in finished
        )
    assert r.hlen(keys.inflight("w1")) == 0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_worker_killed_holding_coalesced_jobs_loses_none(r, procs):
    _backlog(r, jobs_per_stream=6, n=2)
    sup = procs.rtai(
        "worker",
        "--workers",
        "1",
        "--detector",
        "sleep",
        "--sleep-ms",
        "20",
        "--preload",
        "",
        "--fault-point",
        "during_inference",
    )
    point = keys.fault("during_inference")
    wait_for(lambda: r.exists(point), timeout=30, what="the worker to die during inference")
    wait_for(lambda: all(counts(r, s)["published"] == 12 for s in STREAMS), timeout=45, what="every frame published")
    held = list(r.scan_iter(keys.KILLS_PREFIX + "*"))
    assert len(held) >= 2, f"the victim held {len(held)} job(s): nothing was coalesced"
    for stream in STREAMS:
        _published_once(r, stream, 12)
    sup.terminate()
    assert procs.finish(sup, timeout=30) == 0
