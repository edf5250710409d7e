"""A batch that kills every worker that runs it (SIGKILL at inference, every time): after
MAX_ATTEMPTS deaths it is a poison batch, its frames are counted failed and the job is in the
failed registry with the reason; healthy batches on its stream and others are all published, and
the supervisor keeps both children alive. A slot that keeps dying is restarted after a backoff that
`rtai status` explains, never left down."""

from __future__ import annotations

import time

import pytest
from rq import Queue

from common import keys
from common.wire import MsgpackSerializer
from control import status

from ..helpers import wait_for
from ..integration.fleet import counts, frames, sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SLEEP = ("--detector", "sleep", "--sleep-ms", "20", "--preload", "")


def _alive(r) -> dict[str, dict]:
    return {
        n.decode(): r.hgetall(keys.worker(n.decode()))
        for n in r.smembers(keys.WORKERS)
        if r.exists(keys.worker_alive(n.decode()))
    }


def _failed_reasons(r, stream: str) -> list[str]:
    q = Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
    return [q.fetch_job(i).latest_result().exc_string for i in q.failed_job_registry.get_job_ids()]


def test_a_batch_that_kills_its_worker_ends_as_poison_and_nothing_else_is_lost(r, procs):
    sup = procs.rtai("worker", "--workers", "2", *SLEEP, "--fault-batch", "cam1#3")
    wait_for(lambda: len(_alive(r)) == 2, timeout=30, what="two workers")
    cam1, cam2 = sink(r, "cam1"), sink(r, "cam2")
    t0 = time.time()
    for _ in range(6):
        assert cam1.push(frames(4))  # cam1#3 is the poison batch
        assert cam2.push(frames(4))

    def settled() -> bool:
        return all(counts(r, s)["in_flight"] == 0 for s in ("cam1", "cam2"))

    wait_for(settled, timeout=90, what="every frame accounted for")
    took = time.time() - t0
    c1, c2 = counts(r, "cam1"), counts(r, "cam2")
    assert (c1["produced"], c1["published"], c1["failed"]) == (24, 20, 4), c1
    assert (c2["produced"], c2["published"], c2["failed"]) == (24, 24, 0), c2
    (reason,) = _failed_reasons(r, "cam1")
    assert "poison batch cam1#3: killed its worker 3 times" in reason
    assert not r.exists(keys.batch_blob("cam1", 3)), "the poison batch's blob is gone"
    print(f"\ncrash-loop poison: 12 batches, one poison, all settled in {took:.1f} s")
    assert sup.poll() is None, "the supervisor is still running"
    wait_for(lambda: len(_alive(r)) == 2, timeout=30, what="both children alive at the end")
    assert all(not r.hlen(keys.inflight(n)) for n in _alive(r))
    sup.terminate()
    assert procs.finish(sup, timeout=30) == 0


def test_a_slot_that_keeps_dying_backs_off_with_the_reason_in_status(r, procs):
    sup = procs.rtai("worker", "--workers", "1", *SLEEP, "--fault-batch", "cam1#1", env={"RTAI_RESTART_BUDGET": "1"})
    wait_for(lambda: len(_alive(r)) == 1, timeout=30, what="a worker")
    s = sink(r, "cam1")
    assert s.push(frames(4))  # kills the only worker three times: the 2nd and 3rd deaths back off

    def backing_off() -> str:
        text = status.render(status.collect(r))
        return text if "backoff" in text else ""

    text = wait_for(backing_off, timeout=60, what="a slot in backoff in rtai status")
    assert "reason: died 2 times in 60 s (last: killed by SIGKILL); restarting in 1 s" in text, text
    wait_for(lambda: counts(r, "cam1")["failed"] == 4, timeout=60, what="the poison batch settled failed")
    assert s.push(frames(4))
    wait_for(lambda: counts(r, "cam1")["published"] == 4, timeout=30, what="the next batch, on the restarted slot")
    assert sup.poll() is None, "the supervisor never gives up on a slot"
    sup.terminate()
    assert procs.finish(sup, timeout=30) == 0
