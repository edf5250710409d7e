"""A stream that starts before any worker holds one fresh batch, not a backlog: the first results
of the worker that comes later are fresh, and every frame is counted."""

from __future__ import annotations

import pytest

from common import keys
from common.wire import decode_result

from ..helpers import wait_for
from .fleet import counts

FAST_WORKER = ("worker", "--detector", "sleep", "--sleep-ms", "5", "--preload", "")


@pytest.mark.timeout(90)
def test_first_results_after_a_late_worker_are_fresh(r, procs):
    producer = procs.rtai("producer", "--source", "demo", "--loop", "--stream", "cam1", "--max-fps", "15")
    wait_for(lambda: counts(r, "cam1")["produced"] >= 45, timeout=30, what="3 s of frames with no worker")
    assert r.llen(keys.queue_key("cam1")) <= 1, "no worker: at most one batch waits"
    worker = procs.rtai(*FAST_WORKER)
    wait_for(lambda: r.xlen(keys.history("cam1")) >= 5, timeout=30, what="the first results")
    first = [decode_result(f[b"r"]).latency_ms for _id, f in r.xrange(keys.history("cam1"), count=5)]
    assert max(first) < 1000, f"first results' latency {[round(x) for x in first]} ms"

    producer.terminate()
    assert procs.finish(producer, timeout=30) == 0, procs.output(producer)
    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=30, what="every frame accounted for")
    c = counts(r, "cam1")
    assert c["produced"] == c["published"] + c["dropped_backpressure"] + c["dropped_stale"], c
    assert c["failed"] == 0 and c["published"] > 0, c
    worker.terminate()
    procs.finish(worker, timeout=30)
