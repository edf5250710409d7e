"""A network partition between real hosts: Redis, a producer and two workers each in their own
network namespace, joined by veth pairs to a bridge (itself in a namespace). One worker's switch
port goes down while it holds a job, for longer than its lease, then comes back.

The private subnet 10.231.0.0/24 exists only inside the namespaces this test makes; nothing is
added to the machine's own network namespace, and every namespace is deleted at the end. The test
reads Redis through its Unix socket (a path on the shared filesystem).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis
from rq.job import Job
from rq.results import Result

from common import keys, wire
from common.config import DEFAULT_HEARTBEAT_S, DEFAULT_LEASE_S, role_command
from common.wire import MsgpackSerializer, decode_result

from ..helpers import wait_for
from ..integration.fleet import counts
from .netns import _tail

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REDIS_PORT = 6379
#: Cuts longer than the lease (1.5 s): shorter than the workers' Redis socket timeout (10 s), so
#: the cut worker's calls just wait, and longer, so they fail (No route to host) and it retries.
SHORT_CUT_S = 4.0
LONG_CUT_S = 15.0
#: Each job holds a worker 2 x 200 ms, so a worker is caught holding one.
SLEEP_MS = 200
BATCH = 2
STREAM = "part"


def _results(r: redis.Redis) -> list[wire.Result]:
    return [decode_result(fields[b"r"]) for _, fields in r.xrange(keys.history(STREAM))]


def _rtai(*args: str) -> list[str]:
    return role_command("control", *args)


@pytest.mark.parametrize("cut_s", [SHORT_CUT_S, LONG_CUT_S], ids=["cut4s", "cut15s"])
def test_worker_cut_off_longer_than_its_lease_is_replaced_then_rejoins(hosts, cut_s):
    hosts.build(["redis", "producer", "w1", "w2"])
    sock = hosts.workdir / "redis.sock"
    hosts.run(
        "redis",
        [
            "redis-server",
            "--bind",
            hosts.addresses["redis"],
            "--port",
            str(REDIS_PORT),
            "--protected-mode",
            "no",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(hosts.workdir),
        ],
    )
    r = redis.Redis(unix_socket_path=str(sock))
    wait_for(lambda: sock.exists() and r.ping(), timeout=10, what="redis-server in its namespace")
    env = {"RTAI_REDIS_URL": f"redis://{hosts.addresses['redis']}:{REDIS_PORT}/0"}
    worker_args = ["worker", "--detector", "sleep", "--sleep-ms", str(SLEEP_MS), "--preload", ""]
    workers = [hosts.run(name, _rtai(*worker_args, "--name", name), env=env) for name in ("w1", "w2")]
    producer = hosts.run(
        "producer",
        _rtai(
            "producer", "--source", "demo", "--loop", "--stream", STREAM, "--max-fps", "8", "--batch-size", str(BATCH)
        ),
        env=env,
    )

    def batches(name: str) -> int:
        return int(r.hget(keys.worker(name), "batches") or 0)

    wait_for(lambda: batches("w1") >= 2 and batches("w2") >= 2, timeout=90, what="both workers taking jobs")

    # Cut w1 the moment it takes a new job, so it is cut while holding it (mid-inference).
    before = set(r.hkeys(keys.inflight("w1")))
    deadline = time.monotonic() + 30
    while True:
        held = set(r.hkeys(keys.inflight("w1")))
        if held - before:
            break
        assert time.monotonic() < deadline, "w1 took no new job in 30 s"
        before = held
        time.sleep(0.005)
    t_cut = time.time()
    hosts.cut("w1")
    job_id = (held - before).pop().decode()
    assert r.hexists(keys.inflight("w1"), job_id), "w1 finished its job before the cut: the test is void"
    job = Job.fetch(job_id, connection=r, serializer=MsgpackSerializer)
    kw = job.kwargs
    assert kw["stream"] == STREAM

    # While w1 is cut off: watch its lease run out and its job move to w2.
    t_expired = t_requeued = None
    while time.time() < t_cut + cut_s:
        now = time.time()
        if t_expired is None and not r.exists(keys.worker_alive("w1")):
            t_expired = now
        if t_requeued is None and not r.hexists(keys.inflight("w1"), job_id):
            t_requeued = now
        time.sleep(0.01)
    hosts.heal("w1")
    t_heal = time.time()
    assert t_expired is not None, f"w1's lease never ran out in a {cut_s} s cut"
    assert t_requeued is not None, "w1's job was never requeued"

    def takeover() -> list[dict]:
        rows = [m for m in _results(r) if m.batch == kw["batch"]]
        return rows if len(rows) == kw["n"] else []

    rows = wait_for(takeover, timeout=10, what=f"the results of w1's batch #{kw['batch']}")
    assert {m.worker for m in rows} == {"w2"}, "the batch was published by the worker that took it over"
    t_start = min(m.t_start for m in rows)
    print(
        f"\npartition: w1's lease ran out {t_expired - t_cut:.2f} s after the cut, its job was requeued "
        f"{t_requeued - t_expired:.2f} s later and started on w2 {t_start - t_expired:.2f} s after the lease "
        f"ran out ({t_start - t_cut:.2f} s after the cut; lease {DEFAULT_LEASE_S} s, heartbeat {DEFAULT_HEARTBEAT_S} s)"
    )
    assert t_expired - t_cut <= DEFAULT_LEASE_S + 0.3
    assert t_start - t_expired <= 2.0, "requeued to the other worker within 2 s of the lease running out"
    assert t_start - t_cut <= DEFAULT_LEASE_S + 2.0

    # Healed: w1 comes back by itself (lease renewed) and takes new jobs.
    wait_for(lambda: r.exists(keys.worker_alive("w1")), timeout=20, what="w1's lease renewed after healing")
    t_back = time.time()
    wait_for(
        lambda: any(m.worker == "w1" and m.t_start > t_heal for m in _results(r)),
        timeout=30,
        what="w1 publishing again after healing",
    )
    print(f"partition: w1 rejoined {t_back - t_heal:.2f} s after healing")

    if cut_s == SHORT_CUT_S:
        # w1's calls waited out the cut: it finished the batch it held, late, and was refused.
        def late_attempt() -> list[dict]:
            return [
                res.return_value for res in Result.all(job, serializer=MsgpackSerializer) if res.worker_name == "w1"
            ]

        assert wait_for(late_attempt, timeout=15, what="w1 to finish its old batch")[0]["status"] == "duplicate"

    producer.terminate()
    assert producer.wait(timeout=30) == 0, _tail(producer)
    wait_for(lambda: counts(r, STREAM)["in_flight"] == 0, timeout=60, what="the ledger to balance")
    c = counts(r, STREAM)
    assert c["failed"] == 0 and c["dropped_stale"] == 0, c
    seen = Counter((m.stream, m.seq) for m in _results(r))
    assert seen and max(seen.values()) == 1, f"published twice: {[k for k, v in seen.items() if v > 1]}"
    assert c["published"] == len(seen)
    for proc in workers:
        assert proc.poll() is None, f"a worker exited:\n{_tail(proc)}"
