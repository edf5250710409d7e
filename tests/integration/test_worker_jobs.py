"""A real worker process against a real Redis: bad input, ordering, staleness, exactly-once."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import msgpack
from rq import Queue
from rq.registry import FailedJobRegistry

from common import keys
from common.wire import MsgpackSerializer, decode_result, packb
from worker.publisher import Publisher, Settlement

from ..helpers import wait_for
from .fleet import counts, frames, sink

NOOP = ("worker", "--burst", "--detector", "noop", "--preload", "")


def _failed_reasons(r, stream: str) -> list[str]:
    q = Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
    reg = FailedJobRegistry(queue=q, serializer=MsgpackSerializer)
    out = []
    for job_id in reg.get_job_ids():
        job = q.fetch_job(job_id)
        result = job.latest_result()
        out.append(result.exc_string if result else job.exc_info or "")
    return out


def test_bad_input_is_refused_counted_and_the_worker_goes_on(r, procs, tmp_path: Path):
    s = sink(r, "cam1")
    assert s.push(frames(4))  # good
    assert s.push(frames(2))  # malformed blob
    r.set(keys.batch_blob("cam1", 2), b"\xc1\xc1 not msgpack")
    broken = frames(3)
    broken[1] = replace(broken[1], data=b"\xff\xd8 broken jpeg")
    assert s.push(broken)  # one corrupt JPEG among three frames
    assert s.push(frames(2))  # absurd dimensions
    blob = msgpack.unpackb(r.get(keys.batch_blob("cam1", 4)))
    blob["frames"][0]["w"] = 10**6
    r.set(keys.batch_blob("cam1", 4), packb(blob))
    marker = tmp_path / "pwned"
    s.queue.enqueue_call("os.system", args=[f"touch {marker}"])  # outside the allow-list
    job = s.queue.enqueue_call("worker.jobs.process_batch", kwargs={})
    r.hset(f"rq:job:{job.id}", "data", b"\x80\x04\x95 pickle bytes")  # not msgpack at all
    assert s.push(frames(4))  # good again, after all the bad ones

    proc = procs.rtai(*NOOP)
    assert procs.finish(proc) == 0, procs.output(proc)

    c = counts(r, "cam1")
    assert c["produced"] == 4 + 2 + 3 + 2 + 4
    assert c["published"] == 4 + 2 + 4  # the two good batches and two good frames of the broken one
    assert c["failed"] == 2 + 1 + 2
    assert c["in_flight"] == 0
    assert not marker.exists()
    assert int(r.hget(keys.FLEET, "rejected_jobs")) == 2
    reasons = "\n".join(_failed_reasons(r, "cam1"))
    assert "malformed msgpack" in reasons
    assert "JPEG data" in reasons
    assert "w=1000000 is outside" in reasons
    assert "'os.system' is not allowed" in reasons
    assert "not valid msgpack" in reasons


def test_deepest_queue_is_served_first(r, procs):
    deep, quiet = sink(r, "z-deep"), sink(r, "a-quiet")
    for _ in range(8):
        deep.push(frames(2))
    quiet.push(frames(2))
    # One job per call (2 frames each): the order of service is the order of the results.
    proc = procs.rtai(
        "worker", "--burst", "--detector", "sleep", "--sleep-ms", "5", "--preload", "", "--max-batch-frames", "2"
    )
    assert procs.finish(proc) == 0, procs.output(proc)
    done = []
    for stream in ("z-deep", "a-quiet"):
        for _id, fields in r.xrange(keys.history(stream)):
            res = decode_result(fields[b"r"])
            done.append((res.t_done, stream, res.batch))
    order = [stream for _t, stream, _b in sorted(set(done))]
    # Name order would serve a-quiet first; depth order serves z-deep until it is no deeper.
    assert order.index("a-quiet") >= 7, order


def test_stale_frames_are_dropped_and_counted(r, procs):
    s = sink(r, "cam1")
    s.push(frames(3, t_capture=time.time() - 60))
    s.push(frames(2))
    proc = procs.rtai(*NOOP, "--max-frame-age-ms", "30000")
    assert procs.finish(proc) == 0, procs.output(proc)
    c = counts(r, "cam1")
    assert (c["dropped_stale"], c["published"], c["in_flight"]) == (3, 2, 0)


def test_backpressure_drops_and_counts(r):
    s = sink(r, "cam1", queue_bound=2)
    results = [s.push(frames(3)) for _ in range(4)]
    assert results == [True, True, False, False]
    c = counts(r, "cam1")
    assert (c["produced"], c["dropped_backpressure"], c["in_flight"]) == (12, 6, 6)


def test_a_batch_settles_exactly_once(r):
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.results_channel("cam1"))
    s = sink(r, "cam1")
    s.push(frames(2))
    messages = [packb({"v": 1, "seq": i}) for i in range(2)]
    first, second = Publisher(r, "w1"), Publisher(r, "w2")
    assert first.settle(Settlement("cam1", 1, messages=list(messages)))
    assert not second.settle(Settlement("cam1", 1, messages=list(messages)))
    got = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.1)
        if m:
            got.append(m["data"])
    assert got == messages
    assert counts(r, "cam1")["published"] == 2
    assert r.xlen(keys.history("cam1")) == 2
    assert not r.exists(keys.batch_blob("cam1", 1))


def test_new_streams_are_picked_up_without_restart(r, procs):
    proc = procs.rtai("worker", "--detector", "noop", "--preload", "")
    wait_for(lambda: r.scard(keys.WORKERS), timeout=30, what="worker registration")
    s = sink(r, "late-cam")
    s.push(frames(2))
    wait_for(lambda: counts(r, "late-cam")["published"] == 2, timeout=10, what="the new stream's results")
    proc.terminate()
    assert procs.finish(proc) == 0, procs.output(proc)
