"""Dynamic batching: with a backlog across streams, one worker runs several queued jobs in one
detector call, settles each on its own (every frame published once, the ledger balanced, RQ's
records true), a job that fails fails alone, and a kill while it holds several requeues them all."""

from __future__ import annotations

import msgpack
import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.results import Result

from common import keys, ledger
from common.config import WorkerSettings
from common.wire import JobArgs, MsgpackSerializer, decode_result, packb
from worker.broker import Taken
from worker.broker.policies import MODEL_FAILURE_TTL_S
from worker.engines import NoopDetector
from worker.group import Group, GroupJob
from worker.jobs import run_group
from worker.publisher import Publisher
from worker.runtime import Runtime

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
    assert int(stats[b"infer_ms"]) >= 24 * 5, "the detector's time (5 ms a frame) is summed in infer_ms"
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
        for i in finished:
            job = Job.fetch(i, connection=r, serializer=MsgpackSerializer)
            assert job.get_status() == JobStatus.FINISHED
            # The result names the worker that ran it (a partition's late finish is found by it).
            assert [
                (res.worker_name, res.return_value["status"]) for res in Result.all(job, serializer=MsgpackSerializer)
            ] == [("w1", "settled")]
    assert r.hlen(keys.inflight("w1")) == 0
    # The worker's count (`rq info`) has every job it finished, the ones that rode along included.
    assert int(r.hget("rq:worker:w1", "successful_job_count")) == 12


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


@pytest.mark.timeout(60)
def test_a_forged_model_fails_its_own_jobs_and_none_it_was_taken_with(r, procs):
    """Jobs of a stream whose payload names a path (refused as a model) are taken in the same groups
    as good jobs: each fails on its own, once, its record kept minutes; the good ones all publish."""
    good, bad = sink(r, "cam-a"), sink(r, "cam-bad")
    for i in range(1, 5):
        assert good.push(frames(2)) and bad.push(frames(2))
        blob = msgpack.unpackb(r.get(keys.batch_blob("cam-bad", i)))
        blob["model"] = "/tmp/evil.pt"
        r.set(keys.batch_blob("cam-bad", i), packb(blob))
    proc = procs.rtai("worker", "--burst", "--detector", "sleep", "--sleep-ms", "5", "--preload", "", "--name", "w1")
    assert procs.finish(proc) == 0, procs.output(proc)
    _published_once(r, "cam-a", 8)
    c = counts(r, "cam-bad")
    assert (c["failed"], c["published"], c["in_flight"]) == (8, 0, 0), c
    q = Queue(keys.queue_name("cam-bad"), connection=r, serializer=MsgpackSerializer)
    failed = FailedJobRegistry(queue=q, serializer=MsgpackSerializer).get_job_ids()
    assert len(failed) == 4, failed
    assert all(0 < r.ttl(f"rq:job:{i}") <= MODEL_FAILURE_TTL_S for i in failed)
    assert not r.hgetall(keys.attempts("cam-bad")), "a model failure is not retried"
    assert int(r.hget(keys.worker("w1"), "infer_calls")) <= 2, "the good jobs still ran together"
    assert r.hlen(keys.inflight("w1")) == 0


class _Breaks(NoopDetector):
    """Raises (as torch does on a bad input) for any call that holds a 80x60 frame."""

    def __init__(self) -> None:
        super().__init__("rtai-shapes")
        self.calls: list[int] = []

    def predict(self, images, *, conf, imgsz, classes=None):
        self.calls.append(len(images))
        if any(im.shape[:2] == (60, 80) for im in images):
            raise RuntimeError("the culprit's frames break the model")
        return super().predict(images, conf=conf, imgsz=imgsz, classes=classes)


@pytest.mark.timeout(30)
def test_a_detector_error_in_a_shared_call_fails_only_its_culprit(r, redis_server):
    s = sink(r, "cam-a")
    assert s.push(frames(2)) and s.push(frames(2, size=(80, 60))) and s.push(frames(2))
    rt = Runtime(
        client=r,
        name="w1",
        settings=WorkerSettings(redis_url=redis_server, detector="noop"),
        gpu="cpu",
        publisher=Publisher(r, "w1"),
    )
    detector = _Breaks()
    rt.detector = lambda variant, half=None: detector
    group = Group(
        [GroupJob(Taken("q", f"j{i}"), None, JobArgs.for_batch("cam-a", i, 2)) for i in (1, 2, 3)]  # type: ignore[arg-type]
    )
    run_group(rt, group)
    outcomes = group.outcomes
    assert detector.calls == [6, 2, 2, 2], "one shared call, then one call a batch"
    assert isinstance(outcomes["j2"], RuntimeError)
    assert outcomes["j1"]["status"] == outcomes["j3"]["status"] == "settled"
    c = counts(r, "cam-a")
    assert (c["published"], c["failed"], c["in_flight"]) == (4, 0, 2), c  # j2 is left to its retries
