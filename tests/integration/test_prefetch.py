"""Prefetch (worker/prefetch.py): the next group is taken and decoded while one is in hand. The
detections are the same as without it, a stopped worker puts what it prefetched back at the front
of its queue with no death counted, and a prefetch leaves jobs to an idle peer."""

from __future__ import annotations

import signal
import time

import cv2
import pytest

from common import keys
from common.config import DEMO_CLIP
from common.images import encode_frame
from common.wire import decode_result
from worker.broker import RedisBroker

from ..helpers import wait_for
from .fleet import counts, frames, sink

STREAM = "cam"
SLOW_OK = {"RTAI_MAX_FRAME_AGE_MS": "600000"}  # a shared CPU: no frame goes stale in these tests


def _boxes_by_seq(r) -> dict[int, list]:
    return {(res := decode_result(f[b"r"])).seq: res.boxes for _id, f in r.xrange(keys.history(STREAM))}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_prefetched_jobs_give_the_same_detections_as_without_prefetch(r, procs):
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    images = [cap.read()[1] for _ in range(16)]
    cap.release()
    seen = {}
    for mode in ("settle", "off"):
        r.flushdb()
        s = sink(r, STREAM, batch_size=1, model="rtai-shapes", imgsz=320)
        for img in images:
            assert s.push([encode_frame(img, seq=0, t_capture=time.time(), imgsz=320)])
        name = f"w-{mode}"
        args = ("worker", "--burst", "--threads", "1", "--max-batch-frames", "1", "--prefetch", mode, "--name", name)
        proc = procs.rtai(*args, env=SLOW_OK)
        assert procs.finish(proc, timeout=90) == 0, procs.output(proc)
        c = counts(r, STREAM)
        assert c["produced"] == c["published"] == 16 and c["in_flight"] == 0, c
        seen[mode] = _boxes_by_seq(r)
        prefetched = int(r.hget(keys.worker(name), "prefetched_jobs") or 0)
        if mode == "settle":  # every job but the first came ready from a prefetch
            assert prefetched >= 12, prefetched
        else:
            assert prefetched == 0
    assert sorted(seen["settle"]) == list(range(16))
    assert seen["settle"] == seen["off"]
    assert any(seen["off"].values()), "the demo clip shows shapes: some frames have boxes"


@pytest.mark.timeout(60)
def test_a_stopped_worker_puts_its_prefetched_job_back_at_the_front_and_counts_no_death(r, procs):
    s = sink(r, STREAM, batch_size=1)
    for _ in range(3):
        assert s.push(frames(1))
    queue = keys.queue_key(STREAM)
    order = [j.decode() for j in r.lrange(queue, 0, -1)]
    # 500 ms a frame, and the prefetch starts with the detector call: for 500 ms it holds two jobs.
    args = ("worker", "--detector", "sleep", "--sleep-ms", "500", "--preload", "", "--max-batch-frames", "1")
    proc = procs.rtai(*args, "--prefetch", "detect", "--name", "w1")
    wait_for(lambda: r.hlen(keys.inflight("w1")) == 2, timeout=30, what="a running and a prefetched job")
    proc.send_signal(signal.SIGTERM)
    assert procs.finish(proc, timeout=30) == 0, procs.output(proc)
    assert [j.decode() for j in r.lrange(queue, 0, -1)] == order[1:], "the prefetched job is next again"
    assert not r.exists(keys.kills(order[1])), "a stop is no death"
    assert r.hlen(keys.inflight("w1")) == 0
    assert counts(r, STREAM)["published"] == 1
    # Another worker runs the rest: every frame published once.
    proc = procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "", "--name", "w2")
    assert procs.finish(proc, timeout=30) == 0, procs.output(proc)
    c = counts(r, STREAM)
    assert c["produced"] == c["published"] == 3 and c["in_flight"] == 0, c
    assert sorted(_boxes_by_seq(r)) == [0, 1, 2]


@pytest.mark.timeout(30)
def test_a_prefetch_takes_nothing_while_a_live_peer_is_idle(r):
    s = sink(r, STREAM, batch_size=1)
    assert s.push(frames(1))
    broker = RedisBroker(r, "me")
    queue = keys.queue_key(STREAM)

    def prefetch() -> list:
        return broker.fetch(1, [queue], ["peer"])

    r.hset(keys.rq_worker("peer"), "state", "idle")
    r.set(keys.worker_alive("peer"), 1)
    assert prefetch() == [] and r.llen(queue) == 1, "an idle peer runs it now"
    r.delete(keys.worker_alive("peer"))
    r.hset(keys.rq_worker("peer"), "state", "idle")
    r.hset(keys.rq_worker("peer"), "state", "busy")
    r.set(keys.worker_alive("peer"), 1)
    got = prefetch()
    assert len(got) == 1 and r.llen(queue) == 0 and r.hlen(keys.inflight("me")) == 1, "a busy peer: taken"
    assert s.push(frames(1))
    r.hset(keys.rq_worker("peer"), "state", "idle")
    r.delete(keys.worker_alive("peer"))
    assert len(prefetch()) == 1, "an idle peer whose lease ran out is no peer"


@pytest.mark.timeout(60)
def test_an_idle_worker_requeues_what_its_in_flight_hash_holds_after_redis_fails_under_it(r, procs):
    """A dequeue whose reply was lost (or, after a failover, a settle the new master never got) leaves
    a job in a live worker's in-flight hash that the worker does not know it holds; its lease keeps
    it from the reaper. After the next Redis error the idle worker puts it back, and it is published
    (tests/chaos/test_sentinel_partition.py once ended with such a frame in flight)."""
    proc = procs.rtai("worker", "--detector", "noop", "--preload", "", "--name", "w1")
    wait_for(lambda: r.exists(keys.worker_alive("w1")), timeout=30, what="the worker up")
    s = sink(r, STREAM, batch_size=1)
    proc.send_signal(signal.SIGSTOP)  # the worker takes nothing while the orphan is made
    try:
        assert s.push(frames(1))
        # The dequeue script, run as w1 whose reply never reached it: the job now sits in w1's hash.
        taken = RedisBroker(r, "w1").fetch(1, [keys.queue_key(STREAM)])
    finally:
        proc.send_signal(signal.SIGCONT)
    assert len(taken) == 1 and r.hlen(keys.inflight("w1")) == 1
    time.sleep(1.0)
    assert counts(r, STREAM)["published"] == 0, "the worker does not know it holds the job"
    # Redis fails under the idle worker: it refuses writes for a moment, as a demoted master does
    # (READONLY) or one that lost its replicas (NOREPLICAS, here).
    r.config_set("min-replicas-to-write", 1)
    wait_for(lambda: "Redis refuses writes" in procs.output(proc), timeout=20, what="the worker's poll refused")
    r.config_set("min-replicas-to-write", 0)
    try:
        wait_for(lambda: counts(r, STREAM)["published"] == 1, timeout=20, what="the orphan requeued and published")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{procs.output(proc)}") from None
    # The job leaves the in-flight hash with its end records, a round trip after its settle.
    wait_for(lambda: r.hlen(keys.inflight("w1")) == 0, timeout=10, what="the job out of flight")
    assert counts(r, STREAM)["in_flight"] == 0
    assert "left in flight when Redis failed under it" in procs.output(proc)
