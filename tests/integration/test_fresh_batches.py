"""The waiting batch stays fresh: while a stream has no room, the batch that waits in its queue takes
the newest frame; a batch a worker has taken is never touched, and every superseded frame is counted."""

from __future__ import annotations

import statistics
import time

import pytest

from common import keys
from common.wire import decode_batch, decode_result
from worker.broker import RedisBroker

from ..helpers import wait_for
from .fleet import counts, frames, sink

#: One frame takes 200 ms: 5 frames/s, a third of the 15 fps stream.
INFER_MS = 200
SLOW_WORKER = ("worker", "--detector", "sleep", "--sleep-ms", str(INFER_MS), "--preload", "")


def _blob(r, stream: str, batch: int):
    return decode_batch(r.get(keys.batch_blob(stream, batch)))


def test_a_queued_batch_takes_the_new_frame_and_counts_the_old_one(r):
    s = sink(r, "cam1")
    assert s.push(frames(1, t_capture=100.0))
    seq = _blob(r, "cam1", 1).frames[0].seq
    assert s.refresh(frames(1, t_capture=200.0)[0]) == seq
    assert s.refresh(frames(1, t_capture=300.0)[0]) == seq
    b = _blob(r, "cam1", 1)
    assert [f.seq for f in b.frames] == [seq] and b.frames[0].t_capture == 300.0
    assert r.llen(keys.queue_key("cam1")) == 1, "a refresh enqueues nothing"
    c = counts(r, "cam1")
    assert (c["produced"], c["dropped_backpressure"], c["in_flight"]) == (3, 2, 1), c


def test_a_batch_a_worker_has_taken_is_never_overwritten(r):
    s = sink(r, "cam1")
    assert s.push(frames(1, t_capture=100.0))
    before = r.get(keys.batch_blob("cam1", 1))
    # The worker's own dequeue script: the job leaves the queue for the worker's in-flight hash.
    (taken,) = RedisBroker(r, "w1").fetch(1, [keys.queue_key("cam1")])
    assert r.hexists(keys.inflight("w1"), taken.job_id)
    assert s.refresh(frames(1, t_capture=200.0)[0]) is None
    assert r.get(keys.batch_blob("cam1", 1)) == before, "a taken batch's blob was overwritten"
    c = counts(r, "cam1")
    assert (c["produced"], c["dropped_backpressure"]) == (1, 0), c
    assert not s.refreshable(), "a taken batch is not tried again"
    # The script itself, called with a job id that is not in the queue: nothing written.
    script = r.register_script(s._refresh.script)
    args = [taken.job_id, b"x", 60, "produced", "dropped_backpressure"]
    assert script(keys=[keys.queue_key("cam1"), keys.batch_blob("cam1", 1), keys.ledger("cam1")], args=args) == 0
    assert r.get(keys.batch_blob("cam1", 1)) == before and counts(r, "cam1")["produced"] == 1


def test_batches_of_several_frames_are_not_refreshed(r):
    s = sink(r, "cam1")
    assert s.push(frames(2))
    assert not s.refreshable() and s.refresh(frames(1)[0]) is None
    assert counts(r, "cam1")["produced"] == 2


def _latencies_ms(r, stream: str) -> list[float]:
    return [decode_result(fields[b"r"]).latency_ms for _id, fields in r.xrange(keys.history(stream))]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_slow_worker_gets_frames_about_one_tick_old(r, procs, rtsp_pattern):
    worker = procs.rtai(*SLOW_WORKER)
    wait_for(lambda: r.smembers(keys.WORKERS), timeout=30, what="the worker")
    producer = procs.rtai("producer", "--source", rtsp_pattern, "--stream", "cam1", "--max-fps", "15", log="cam1.log")
    wait_for(lambda: counts(r, "cam1")["published"] >= 4, timeout=30, what="first results")
    r.delete(keys.history("cam1"))  # the first results may have waited for the worker's start
    time.sleep(6)  # 15 fps offered, 5 taken
    producer.terminate()
    assert procs.finish(producer, timeout=30) == 0, procs.output(producer)
    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=30, what="every frame accounted for")

    c = counts(r, "cam1")
    assert c["dropped_backpressure"] > 0 and c["dropped_stale"] == 0 and c["failed"] == 0, c
    assert c["produced"] == c["published"] + c["dropped_backpressure"], c
    lat = _latencies_ms(r, "cam1")
    assert len(lat) >= 15, lat
    # Without refresh the frame a worker takes waited a whole inference (p50 ~ 2 inference times).
    p50 = statistics.median(lat)
    assert p50 < 1.5 * INFER_MS, f"p50 {p50:.0f} ms, {INFER_MS} ms a frame"
    worker.terminate()
    procs.finish(worker, timeout=30)
