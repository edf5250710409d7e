"""A declared stream's life as `rtai status`, `rtai stream ls` and the API tell it: unclaimed without
a daemon, gone from the views once removed and drained, never brought back by a worker, purged."""

from __future__ import annotations

import json

import pytest

from common import desired, keys
from common.config import ProducerSettings

from ..helpers import wait_for
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(90)


def _status(procs) -> dict:
    st = procs.rtai("status", "--json")
    assert procs.finish(st, timeout=30) == 0
    return json.loads(procs.output(st))["streams"]


def test_a_declared_stream_without_a_daemon_says_so_then_runs_once_one_starts(r, procs):
    desired.put(r, ProducerSettings(stream="door", source="demo", max_fps=5))
    door = _status(procs)["door"]
    assert door["state"] == "unclaimed" and "no producer daemon is running" in door["reason"], door
    ls = procs.rtai("stream", "ls")
    assert procs.finish(ls, timeout=30) == 0
    assert "unclaimed: no producer daemon is running" in procs.output(ls)
    daemon = procs.rtai("producer")
    wait_for(lambda: r.get(keys.claim("door")), timeout=30, what="the daemon's claim")
    wait_for(lambda: _status(procs)["door"]["state"] == "running", timeout=30, what="door running")
    daemon.terminate()
    assert procs.finish(daemon, timeout=30) == 0
    assert r.zcard(keys.DAEMONS) == 0, "a stopped daemon leaves the heartbeat set"


def test_a_worker_never_brings_back_a_stopped_streams_state(r, procs):
    s = sink(r, "gone", model="yolo11x")  # not on this machine: the batches fail
    s.push(frames(2))
    r.hset(keys.stream("gone"), mapping={"state": "stopped", "reason": "producer stopped"})
    worker = procs.rtai("worker", "--burst", "--preload", "")
    assert procs.finish(worker, timeout=60) == 0
    assert counts(r, "gone")["failed"] == 2
    assert r.hget(keys.stream("gone"), "state") == b"stopped", "the worker's error did not resurrect it"


def test_a_removed_stream_leaves_the_views_and_purge_deletes_every_key(r, procs):
    desired.put(r, ProducerSettings(stream="old", source="demo"))
    s = sink(r, "old")
    s.push(frames(2))
    assert procs.finish(procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")) == 0
    r.hset(keys.stream("old"), mapping={"state": "error", "reason": "gave up"})
    assert "old" in _status(procs)
    rm = procs.rtai("stream", "rm", "old")
    assert procs.finish(rm, timeout=30) == 0 and "expire in 7 days" in procs.output(rm)
    assert "old" not in _status(procs), "removed, every frame accounted for: out of the views"
    assert 0 < r.ttl(keys.ledger("old")) <= keys.REMOVED_TTL_S and 0 < r.ttl(keys.history("old"))
    desired.put(r, ProducerSettings(stream="old", source="demo"))  # declared again: kept again
    assert r.ttl(keys.ledger("old")) == -1 and "old" in _status(procs)
    purge = procs.rtai("stream", "rm", "old", "--purge")
    assert procs.finish(purge, timeout=30) == 0, procs.output(purge)
    left = [k for k in r.scan_iter() if b":old" in k and not k.startswith(b"rtai:removed:")]
    assert left == [], left
    assert not r.sismember(keys.STREAMS, "old")


def test_a_producer_sums_up_with_what_its_ledger_says(r, procs):
    prod = procs.rtai("producer", "--source", "demo", "--stream", "sum", "--max-frames", "30", "--max-fps", "30")
    assert procs.finish(prod, timeout=60) == 0
    c = counts(r, "sum")
    (line,) = [ln for ln in procs.output(prod).splitlines() if ln.startswith("stream sum:")]
    dropped = sum(v for k, v in c.items() if k.startswith("dropped_"))
    assert line.startswith(
        f"stream sum: {c['produced']} frames produced, {c['published']} published, {dropped} dropped"
    ), (line, c)
    assert f"{c['in_flight']} in flight; final state stopped" in line and c["produced"] == 30
    assert dropped > 0 and "backpressure" in line, "no worker: frames were skipped at the source, and it says so"


def test_class_names_the_model_lacks_are_said_in_the_streams_reason(r, procs):
    s = sink(r, "cls", analytics={"classes": ["circle", "unicorn"]})  # rtai-shapes: circle, square, triangle
    s.push(frames(2))
    assert procs.finish(procs.rtai("worker", "--burst", "--preload", ""), timeout=90) == 0
    assert counts(r, "cls")["published"] == 2, "the batch still runs, for the classes it has"
    reason = r.hget(keys.stream("cls"), "reason").decode()
    assert "has no class 'unicorn'" in reason and "circle" in reason, reason
