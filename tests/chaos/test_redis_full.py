"""Redis full (`maxmemory` reached under `noeviction`): the fleet rides it out.

A private redis-server (not the session's: this one runs out of memory on purpose), a real
producer on the demo clip and a real supervisor with two workers. Filler keys take Redis to its
`maxmemory` for several seconds, so every write is refused (OutOfMemoryError), then are deleted.
No worker dies, nothing is left in flight or STARTED, the ledger balances with the refused frames
counted `dropped_redis_full`, and the producer logs words, not batch bytes.
"""

from __future__ import annotations

import time

import pytest
import redis
from rq.registry import StartedJobRegistry

from common import keys
from common.wire import MsgpackSerializer
from control.redis_server import PrivateRedis

from ..helpers import Procs, wait_for
from ..integration.fleet import counts, frames, sink

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STREAM = "cam1"
#: A second stream with a backlog when Redis fills: its queued jobs are dequeued while writes are
#: refused, so workers hold them (in flight) until they can go back to their queue.
BACKLOG = "cam2"
#: How long Redis stays full: long enough for leases (1.5 s) to run out and workers to hit it.
FULL_S = 6.0
FILLER_BYTES = 256 * 1024


def _alive_workers(r: redis.Redis) -> set[str]:
    return {n.decode() for n in r.smembers(keys.WORKERS) if r.exists(keys.worker_alive(n.decode()))}


def fill(r: redis.Redis, *, headroom: int = 4 * 1024 * 1024) -> list[str]:
    """Cap Redis a little above what it uses, write filler keys until it refuses one, then lower
    the cap a little below what it uses, so that batches the fleet deletes (settled blobs,
    expiring jobs) do not let writes through again until the fillers go."""
    r.config_set("maxmemory", r.info("memory")["used_memory"] + headroom)
    names = []
    for i in range(10_000):
        name = f"test-filler:{i}"
        try:
            r.set(name, b"f" * FILLER_BYTES)
        except redis.exceptions.OutOfMemoryError:
            r.config_set("maxmemory", r.info("memory")["used_memory"] - headroom // 2)
            return names
        names.append(name)
    raise AssertionError("Redis never filled up")


def run_redis_full(tmp_path, *, full_s: float = FULL_S) -> dict[str, float]:
    """The scenario; returns the measured figures (also used by benchmarks/redis_full.py)."""
    server = PrivateRedis()
    r = redis.Redis.from_url(server.url)
    procs = Procs(server.url, tmp_path)
    try:
        r.config_set("maxmemory-policy", "noeviction")
        sup = procs.rtai(
            "worker", "--workers", "2", "--detector", "sleep", "--sleep-ms", "100", "--preload", "", log="workers.log"
        )
        producer = procs.rtai(
            "producer", "--source", "demo", "--stream", STREAM, "--loop", "--max-fps", "20", "--batch-size", "2",
            log="producer.log",
        )  # fmt: skip
        wait_for(lambda: len(_alive_workers(r)) == 2, timeout=60, what="two workers")
        wait_for(lambda: counts(r, STREAM)["published"] >= 20, timeout=60, what="results before Redis fills")
        workers = _alive_workers(r)

        # Pause the fleet (`rq suspend`), queue a backlog, fill Redis, resume (DEL runs on a full
        # Redis): the idle workers dequeue jobs they cannot start, since RQ's bookkeeping is refused.
        r.set(keys.RQ_SUSPENDED, 1)
        wait_for(lambda: not any(r.exists(keys.inflight(w)) for w in workers), timeout=15, what="idle workers")
        backlog = sink(r, BACKLOG)
        for _ in range(8):
            backlog.push(frames(4))
        fillers = fill(r)
        r.delete(keys.RQ_SUSPENDED)
        t_full = time.monotonic()
        wait_for(lambda: "maxmemory" in procs.output(producer), timeout=15, what="the producer to see Redis full")
        time.sleep(max(0.0, full_s - (time.monotonic() - t_full)))  # the fault lasts this long
        published_full = counts(r, STREAM)["published"]
        r.delete(*fillers)
        t_free = time.monotonic()
        wait_for(
            lambda: counts(r, STREAM)["published"] > published_full + 4,
            timeout=30,
            interval=0.02,
            what="results after memory is freed",
        )
        recovery_s = time.monotonic() - t_free
        wait_for(lambda: counts(r, STREAM)["dropped_redis_full"] > 0, timeout=15, what="refused frames counted")
        before = counts(r, STREAM)["published"]
        wait_for(lambda: counts(r, STREAM)["published"] >= before + 20, timeout=30, what="steady results again")

        producer.terminate()
        assert procs.finish(producer, timeout=30) == 0, procs.output(producer)
        wait_for(lambda: counts(r, STREAM)["in_flight"] == 0, timeout=60, what="every frame accounted for")
        wait_for(lambda: counts(r, BACKLOG)["in_flight"] == 0, timeout=60, what="the backlog accounted for")

        c = counts(r, STREAM)
        out, wlog = procs.output(producer), procs.output(sup)
        assert sup.poll() is None, f"the supervisor exited:\n{wlog[-3000:]}"
        assert _alive_workers(r) == workers, f"a worker died or was replaced:\n{wlog[-3000:]}"
        assert "quitting" not in wlog, wlog[-3000:]
        assert "holding them" in wlog, "no job was in hand while Redis was full: the test missed its point"
        assert r.llen(keys.queue_key(STREAM)) == 0 and r.llen(keys.queue_key(BACKLOG)) == 0, "a batch is stuck"
        assert not any(r.exists(keys.inflight(w)) for w in workers), "a job is stuck in flight"
        for stream in (STREAM, BACKLOG):
            started = StartedJobRegistry(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
            assert started.get_job_ids() == [], f"a job of {stream} is stuck STARTED"
        b = counts(r, BACKLOG)
        assert b["produced"] == 32 and b["published"] + b["dropped_stale"] == 32, b
        assert (
            c["produced"]
            == c["published"]
            + c["dropped_backpressure"]
            + c["dropped_stale"]
            + c["dropped_unreachable"]
            + c["dropped_redis_full"]
            + c["failed"]
        ), c
        assert c["dropped_redis_full"] > 0 and c["dropped_unreachable"] == 0 and c["failed"] == 0, c
        assert "b'\\x" not in out and "\\x" not in out and "\ufffd" not in out, "the producer logged batch bytes"
        assert "of pipeline caused error" not in out, "the producer logged a pipeline's commands"
        return {"recovery_s": recovery_s, "dropped_redis_full": c["dropped_redis_full"], "unaccounted": c["in_flight"]}
    finally:
        procs.close()
        r.close()
        server.stop()


def test_redis_full_fleet_rides_it_out(tmp_path):
    figures = run_redis_full(tmp_path)
    print(f"\nRedis full for {FULL_S:.0f} s: fleet processing again {figures['recovery_s']:.2f} s after memory freed")
    assert figures["recovery_s"] < 5.0, figures
