"""Clock skew: a worker whose host clock runs 12 s ahead still publishes every frame.

Before, the stale check compared the producer host's capture time with the worker host's clock,
so every frame looked 12 s old and was dropped as stale without a word. Now both stamp and compare
in Redis time (their own clock + the offset measured against Redis' TIME), and the skew is shown.

The skew is injected with RTAI_CLOCK_SKEW_TEST_S: Debian's libfaketime (0.9.10) cannot skew a
threaded Python 3.11 process (with monotonic time faked, timed waits such as Event.wait hang;
with FAKETIME_DONT_FAKE_MONOTONIC=1, time.sleep fails with EINVAL).
"""

from __future__ import annotations

import pytest

from common import keys
from common.wire import decode_result

from ..helpers import wait_for
from .fleet import counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SKEW_S = 12


@pytest.mark.parametrize("skewed", ["worker", "producer"])
def test_host_12_s_off_publishes_every_frame(r, procs, skewed):
    """The worker's host 12 s ahead, or the producer's host 12 s behind: both made every frame
    look 12 s old to the stale check."""
    skew = {"worker": SKEW_S, "producer": -SKEW_S}[skewed]
    env = {"RTAI_CLOCK_SKEW_TEST_S": str(skew)}
    worker = procs.rtai(
        "worker", "--detector", "sleep", "--sleep-ms", "5", "--preload", "",
        env=env if skewed == "worker" else None, log="worker.log",
    )  # fmt: skip
    producer = procs.rtai(
        "producer", "--source", "demo", "--stream", "cam1", "--max-frames", "40", "--batch-size", "4",
        "--no-credit-flow",  # every frame queues though the worker may not serve the stream yet
        env=env if skewed == "producer" else None, log="producer.log",
    )  # fmt: skip
    assert procs.finish(producer, timeout=60) == 0, procs.output(producer)
    wait_for(lambda: counts(r, "cam1")["in_flight"] == 0, timeout=30, what="every frame accounted for")
    c = counts(r, "cam1")
    assert c["produced"] == 40 and c["published"] == 40 and c["dropped_stale"] == 0, c

    results = [decode_result(f[b"r"]) for _id, f in r.xrange(keys.history("cam1"))]
    latencies = [res.t_done - res.t_capture for res in results]
    assert len(latencies) == 40
    assert all(-0.5 < lat < 10 for lat in latencies), f"latency not sane: {min(latencies)}..{max(latencies)} s"

    status = procs.rtai("status")
    assert procs.finish(status, timeout=30) == 0
    shown = procs.output(status)
    if skewed == "worker":
        name = wait_for(lambda: next(iter(r.smembers(keys.WORKERS)), None), timeout=5, what="the worker").decode()
        offset = float(r.hget(keys.worker(name), "clock_offset_s"))
        assert offset < -(SKEW_S - 1), f"the worker's skew is not reported: {offset}"
        assert "ahead of Redis' clock" in procs.output(worker)
        assert f"{name}'s host is {SKEW_S}.0 s ahead of Redis' clock" in shown, shown
    else:
        offset = float(r.hget(keys.stream("cam1"), "clock_offset_s"))
        assert offset > SKEW_S - 1, f"the producer's skew is not reported: {offset}"
        assert "behind Redis' clock" in procs.output(producer)
        assert f"the producer's host is {SKEW_S}.0 s behind Redis' clock" in shown, shown
    worker.terminate()
    procs.finish(worker, timeout=30)
