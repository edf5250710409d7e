"""Chaos with real processes and real signals: kill workers at chosen points, stop one, resume it
late, poison a batch, stop gracefully. After each: the ledger balances, no frame is published
twice, and the time from the kill to the job running again is recorded."""

from __future__ import annotations

import os
import signal
import time

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from common import keys
from common.wire import MsgpackSerializer, decode_result

from ..checkpoints import broken_checkpoint
from ..helpers import wait_for
from ..integration.fleet import counts, frames, sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _results(r, stream: str) -> list[dict]:
    return [decode_result(f[b"r"]) for _id, f in r.xrange(keys.history(stream))]


def _assert_exactly_once(r, stream: str, n: int) -> None:
    c = counts(r, stream)
    assert c["produced"] == n and c["in_flight"] == 0, c
    seqs = [res["seq"] for res in _results(r, stream)]
    assert len(seqs) == len(set(seqs)), "a frame was published twice"
    assert c["published"] == len(seqs)


def _alive(r) -> dict[str, dict]:
    return {
        n.decode(): r.hgetall(keys.worker(n.decode()))
        for n in r.smembers(keys.WORKERS)
        if r.exists(keys.worker_alive(n.decode()))
    }


@pytest.mark.parametrize("point", ["after_dequeue", "during_inference", "after_publish"])
def test_worker_killed_at_a_point_loses_nothing(r, procs, point):
    sup = procs.rtai(
        "worker", "--workers", "2", "--detector", "sleep", "--sleep-ms", "20", "--preload", "", "--fault-point", point
    )
    wait_for(lambda: len(_alive(r)) == 2, timeout=30, what="two workers")
    s = sink(r, "cam1")
    for _ in range(12):
        s.push(frames(4))
    wait_for(lambda: r.exists(keys.fault(point)), timeout=20, what=f"a worker to die at {point}")
    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=30, what="every frame accounted for")
    _assert_exactly_once(r, "cam1", 48)
    assert counts(r, "cam1")["published"] == 48
    victim, t_kill = r.get(keys.fault(point)).decode().split()
    if point != "after_publish":
        rerun = [res for res in _results(r, "cam1") if res["t_start"] > float(t_kill)]
        kill_to_running = min(res["t_start"] for res in rerun) - float(t_kill)
        print(f"\n{point}: kill to the job running again: {kill_to_running * 1000:.0f} ms")
        assert kill_to_running < 2.0
    wait_for(lambda: len(_alive(r)) == 2 and victim not in _alive(r), timeout=30, what="the restarted child")
    sup.terminate()
    assert procs.finish(sup, timeout=30) == 0


def test_stopped_worker_is_leased_out_and_its_late_finish_changes_nothing(r, procs):
    slow = procs.rtai("worker", "--detector", "sleep", "--sleep-ms", "400", "--preload", "")
    wait_for(lambda: len(_alive(r)) == 1, timeout=30, what="the first worker")
    (slow_name,) = _alive(r)
    s = sink(r, "cam1")
    s.push(frames(4))
    wait_for(lambda: r.hlen(keys.inflight(slow_name)), timeout=10, interval=0.01, what="the job to start")
    os.kill(slow.pid, signal.SIGSTOP)
    t_stop = time.time()
    helper = procs.rtai("worker", "--detector", "sleep", "--sleep-ms", "1", "--preload", "")
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=20, what="the job to run elsewhere")
    took_over = min(res["t_start"] for res in _results(r, "cam1")) - t_stop
    assert took_over < 6.0, took_over  # the lease (2 s) plus the helper's start
    os.kill(slow.pid, signal.SIGCONT)
    s.push(frames(4))
    wait_for(lambda: counts(r, "cam1")["published"] == 8, timeout=20, what="more work after the resume")
    _assert_exactly_once(r, "cam1", 8)
    assert slow.poll() is None, "the resumed worker carries on"
    for p in (slow, helper):
        p.terminate()
        assert procs.finish(p, timeout=30) == 0


def test_poison_batch_fails_after_retries_and_never_blocks_its_stream(r, procs, tmp_path):
    # A model that loads but whose every predict raises (a missing model fails at once instead:
    # tests/integration/test_model_security.py).
    broken_checkpoint(tmp_path / "broken.pt")
    bad = sink(r, "cam1", model="broken.pt")
    good = sink(r, "cam2")
    bad.push(frames(3))
    for _ in range(3):
        good.push(frames(2))
    env = {"RTAI_WEIGHTS_DIR": str(tmp_path)}
    # Frames made before the worker starts: on a loaded host its start, the model loads and the
    # failing attempts can pass the default 10 s age limit; staleness is not what this tests.
    proc = procs.rtai(
        "worker", "--burst", "--detector", "yolo", "--preload", "", "--max-frame-age-ms", "120000", env=env
    )
    assert procs.finish(proc, timeout=60) == 0, procs.output(proc)
    assert counts(r, "cam2")["published"] == 6
    c = counts(r, "cam1")
    assert (c["failed"], c["published"], c["in_flight"]) == (3, 0, 0)
    q = Queue(keys.queue_name("cam1"), connection=r, serializer=MsgpackSerializer)
    (job_id,) = FailedJobRegistry(queue=q, serializer=MsgpackSerializer).get_job_ids()
    reason = q.fetch_job(job_id).latest_result().exc_string
    assert "poison batch: failed 3 times" in reason and "expected input" in reason


def test_first_sigterm_finishes_the_batch_second_requeues_it(r, procs):
    w = procs.rtai("worker", "--detector", "sleep", "--sleep-ms", "300", "--preload", "")
    wait_for(lambda: len(_alive(r)) == 1, timeout=30, what="a worker")
    (name,) = _alive(r)
    s = sink(r, "cam1")
    s.push(frames(4))
    wait_for(lambda: r.hlen(keys.inflight(name)), timeout=10, interval=0.01, what="the job to start")
    w.send_signal(signal.SIGTERM)
    assert procs.finish(w, timeout=30) == 0
    assert counts(r, "cam1")["published"] == 4, "the batch in hand was finished"

    w2 = procs.rtai("worker", "--detector", "sleep", "--sleep-ms", "800", "--preload", "")
    wait_for(lambda: len(_alive(r)) == 1, timeout=30, what="a worker")
    (name2,) = _alive(r)
    s.push(frames(4))
    wait_for(lambda: r.hlen(keys.inflight(name2)), timeout=10, interval=0.01, what="the job to start")
    w2.send_signal(signal.SIGTERM)
    time.sleep(1.1)  # RQ ignores a repeat within 1 s (a pool may relay the same Ctrl-C twice)
    w2.send_signal(signal.SIGTERM)
    procs.finish(w2, timeout=30)
    assert counts(r, "cam1")["published"] == 4, "the second batch was interrupted"
    assert r.llen(keys.queue_key("cam1")) == 1, "and is back on its queue"
    w3 = procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")
    assert procs.finish(w3, timeout=30) == 0
    _assert_exactly_once(r, "cam1", 8)
    assert counts(r, "cam1")["published"] == 8
