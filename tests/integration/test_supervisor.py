"""The worker supervisor with real child processes and a real SIGKILL."""

from __future__ import annotations

import os
import signal

import pytest

from common import keys
from common.wire import decode_result

from ..helpers import wait_for
from .fleet import counts, frames, sink


def _alive_workers(r) -> dict[str, dict[bytes, bytes]]:
    out = {}
    for raw in r.smembers(keys.WORKERS):
        name = raw.decode()
        if r.exists(keys.worker_alive(name)):
            out[name] = r.hgetall(keys.worker(name))
    return out


@pytest.mark.timeout(120)
def test_killed_child_job_is_requeued_and_child_restarted(r, procs):
    sup = procs.rtai("worker", "--workers", "2", "--detector", "sleep", "--sleep-ms", "100", "--preload", "")
    wait_for(lambda: len(_alive_workers(r)) == 2, timeout=30, what="two workers")
    s = sink(r, "cam1")
    for _ in range(10):
        s.push(frames(4))

    def holding_a_job() -> list[int]:
        return [int(w[b"pid"]) for name, w in _alive_workers(r).items() if r.hlen(keys.inflight(name))]

    victim_pid = wait_for(holding_a_job, timeout=10, interval=0.01, what="a worker holding a job")[0]
    os.kill(victim_pid, signal.SIGKILL)

    wait_for(lambda: counts(r, "cam1")["published"] == 40, timeout=30, what="all 40 frames published")
    c = counts(r, "cam1")
    assert c["in_flight"] == 0 and c["failed"] == 0
    seqs = [decode_result(f[b"r"]).seq for _id, f in r.xrange(keys.history("cam1"))]
    assert sorted(seqs) == list(range(40)), "every frame exactly once"
    started = keys.RQ_STARTED_PREFIX + keys.queue_name("cam1")
    assert r.zcard(started) == 0, "no dead execution left for RQ's cleanup to fail later"
    wait_for(lambda: len(_alive_workers(r)) == 2, timeout=30, what="the killed child to be restarted")
    assert victim_pid not in {int(w[b"pid"]) for w in _alive_workers(r).values()}

    sup.send_signal(signal.SIGTERM)
    assert procs.finish(sup, timeout=30) == 0, procs.output(sup)
    assert not _alive_workers(r)


def _pid_gone(pid: int) -> bool:
    """The process exited (a zombie of a dead parent is reaped by init, so a missing /proc entry)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.timeout(90)
def test_children_die_with_a_killed_supervisor(r, procs):
    sup = procs.rtai("worker", "--workers", "2", "--detector", "sleep", "--sleep-ms", "10", "--preload", "")
    workers = wait_for(lambda: (w := _alive_workers(r)) and len(w) == 2 and w, timeout=30, what="two workers")
    pids = [int(w[b"pid"]) for w in workers.values()]
    sup.kill()  # SIGKILL: no handler runs, the children are left to the kernel
    sup.wait(timeout=10)
    wait_for(lambda: all(_pid_gone(p) for p in pids), timeout=10, what="the children to exit with their parent")
