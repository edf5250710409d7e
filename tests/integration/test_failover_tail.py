"""A failover's lost tail is counted, never silently gone (issue 19).

Replication is asynchronous: a replica promoted by Sentinel may lack the old master's last writes,
among them batches a producer enqueued and counted `produced`, and the stream's seq and batch
counters go back with them. A real producer runs here against a real Redis; the test puts Redis in
exactly the state such a promotion leaves (the newest batches gone: jobs, blobs, their `produced`
counts and the counters' advance). Within a few seconds the producer finds the frames it had
counted and Redis lost, counts them `dropped_redis_failover`, and raises the counters again, so no
seq it already used is handed out twice. A Redis that lost the stream itself (restarted empty) is
left alone: the producer says so at exit instead (tests/chaos/test_outages.py).
"""

from __future__ import annotations

import time

import pytest
import redis

from common import keys, ledger

from ..helpers import wait_for

LOST = 4


def _lose_the_tail(r: redis.Redis, stream: str, queue: str) -> tuple[int, int]:
    """Remove the newest LOST batches as a promotion without them would; (next_seq, next_batch) before."""
    with r.pipeline() as pipe:
        while True:
            try:
                pipe.watch(queue, keys.stream(stream), keys.ledger(stream))
                ids = [i.decode() for i in pipe.lrange(queue, -LOST, -1)]
                batches = [int(pipe.hget(f"rq:job:{i}", "description").split(b"#")[1].split()[0]) for i in ids]
                seq = int(pipe.hget(keys.stream(stream), "next_seq"))
                batch = int(pipe.hget(keys.stream(stream), "next_batch"))
                pipe.multi()
                for job_id, b in zip(ids, batches, strict=True):
                    pipe.lrem(queue, 1, job_id)
                    pipe.delete(f"rq:job:{job_id}", keys.batch_blob(stream, b))
                pipe.hincrby(keys.ledger(stream), ledger.PRODUCED, -LOST)  # batches of one frame
                pipe.hset(keys.stream(stream), mapping={"next_seq": seq - LOST, "next_batch": batch - LOST})
                pipe.execute()
                return seq, batch
            except redis.WatchError:  # the producer wrote meanwhile: read again
                continue


@pytest.mark.timeout(90)
def test_a_lost_tail_is_counted_dropped_redis_failover_and_seqs_are_never_reused(r, procs):
    stream = "tail"
    prod = procs.rtai(
        "producer", "--source", "demo", "--stream", stream, "--loop", "--max-fps", "10", "--batch-size", "1",
        "--no-credit-flow", "--no-fresh-batches", "--queue-bound", "100000",
    )  # fmt: skip
    queue = f"rq:queue:{keys.queue_name(stream)}"
    wait_for(lambda: r.llen(queue) >= 10, timeout=30, what="ten batches queued")
    seq, batch = _lose_the_tail(r, stream, queue)
    got = wait_for(
        lambda: (c := ledger.read(r, stream))["dropped_redis_failover"] == LOST and c,
        timeout=20,
        what="the lost frames counted",
    )
    assert int(r.hget(keys.stream(stream), "next_seq")) >= seq, "a seq already used would be handed out again"
    assert int(r.hget(keys.stream(stream), "next_batch")) >= batch
    prod.terminate()
    assert procs.finish(prod, timeout=30) == 0
    out = procs.output(prod)
    assert f"Redis lost {LOST} frames this producer had counted" in out, out
    assert f"redis_failover {LOST}" in out, out  # in the closing summary's drops
    final = ledger.read(r, stream)
    assert final["produced"] == final["in_flight"] + ledger.dropped(final) + final["published"], got
    assert r.llen(queue) == final["in_flight"], "every frame still counted in flight is queued"


@pytest.mark.timeout(90)
def test_a_master_that_refuses_writes_without_replicas_is_ridden_out_and_counted(tmp_path):
    """The stricter choice docs/faults.md offers: `min-replicas-to-write 1` on a master with no
    replica refuses every write (NOREPLICAS). The producer counts those frames dropped_redis_full,
    logs why, and carries on once writes are taken again."""
    from control.redis_server import PrivateRedis  # noqa: PLC0415

    from ..helpers import Procs  # noqa: PLC0415

    server = PrivateRedis()
    r = redis.Redis.from_url(server.url)
    procs = Procs(server.url, tmp_path)
    try:
        prod = procs.rtai("producer", "--source", "demo", "--stream", "strict", "--loop", "--max-fps", "10",
                          "--no-credit-flow", "--queue-bound", "100000")  # fmt: skip
        wait_for(lambda: ledger.read(r, "strict")["produced"] >= 5, timeout=30, what="frames before")
        r.config_set("min-replicas-to-write", 1)
        time.sleep(2.0)
        r.config_set("min-replicas-to-write", 0)
        wait_for(lambda: ledger.read(r, "strict")["dropped_redis_full"] > 0, timeout=20, what="refused frames counted")
        before = ledger.read(r, "strict")["produced"]
        wait_for(lambda: ledger.read(r, "strict")["produced"] > before + 5, timeout=20, what="frames again")
        assert prod.poll() is None, procs.output(prod)
        prod.terminate()
        assert procs.finish(prod, timeout=30) == 0
        assert "counted dropped_redis_full" in procs.output(prod), procs.output(prod)
    finally:
        procs.close()
        server.stop()
