"""Adding workers while a stream runs: they take a share at once, nothing restarts, nothing is lost."""

from __future__ import annotations

import pytest

from common import keys

from ..helpers import wait_for
from .fleet import counts

SLOW_WORKER = ("worker", "--detector", "sleep", "--sleep-ms", "150", "--preload", "")


def _frames_by_pid(r) -> dict[int, int]:
    out = {}
    for raw in r.smembers(keys.WORKERS):
        info = r.hgetall(keys.worker(raw.decode()))
        if info:
            out[int(info[b"pid"])] = int(info.get(b"frames", 0))
    return out


@pytest.mark.timeout(150)
def test_added_workers_share_the_load_without_restarts(r, procs, rtsp_pattern):
    first = procs.rtai(*SLOW_WORKER)
    wait_for(lambda: first.pid in _frames_by_pid(r), timeout=30, what="the first worker")
    producer = procs.rtai(
        "producer",
        "--source",
        rtsp_pattern,
        "--stream",
        "cam1",
        "--max-fps",
        "12",
        "--batch-size",
        "2",
        "--queue-bound",
        "1000",
    )
    wait_for(lambda: _frames_by_pid(r).get(first.pid, 0) >= 10, timeout=30, what="the first worker to work")
    second = procs.rtai(*SLOW_WORKER)
    third = procs.rtai(*SLOW_WORKER)
    wait_for(
        lambda: _frames_by_pid(r).get(second.pid, 0) >= 10 and _frames_by_pid(r).get(third.pid, 0) >= 10,
        timeout=40,
        what="the added workers to take a share",
    )
    producer.terminate()
    assert procs.finish(producer, timeout=30) == 0, procs.output(producer)
    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=60, what="the queue to drain")

    by_pid = _frames_by_pid(r)
    c = counts(r, "cam1")
    # Frames the fleet had no room for were skipped at the source and counted (credit-based flow).
    assert c["published"] + c["dropped_backpressure"] == c["produced"] and c["published"] > 0, c
    assert c["failed"] == 0 and c["dropped_stale"] == 0, c
    assert sum(by_pid[p.pid] for p in (first, second, third)) == c["published"]
    assert all(p.poll() is None for p in (first, second, third)), "no worker restarted or died"
    for p in (first, second, third):
        p.terminate()
        assert procs.finish(p, timeout=30) == 0
