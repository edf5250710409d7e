"""The guide's model_settings change who does the work. GPU workers are simulated on this CPU
machine by a worker with a GPU label (CUDA_VISIBLE_DEVICES) and the sleep detector: routing is what
is under test, and it only sees labels."""

from __future__ import annotations

import pytest

from common import keys
from common.wire import decode_result
from worker.routing import fixed_choice

from ..helpers import wait_for
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(120)
SLEEP = ("--detector", "sleep", "--sleep-ms", "20", "--preload", "")


def _results(r, stream):
    return [decode_result(f[b"r"]) for _id, f in r.xrange(keys.history(stream))]


def _live(r) -> dict[str, str]:
    out = {}
    for raw in r.smembers(keys.WORKERS):
        n = raw.decode()
        if r.exists(keys.worker_alive(n)):
            out[n] = r.hget(keys.worker(n), "gpu").decode()
    return out


def _start(procs, r, n_total: int, *specs):
    for gpu in specs:
        if gpu == "cpu":
            procs.rtai("worker", *SLEEP)
        else:
            procs.rtai("worker", "--device", "cuda:0", *SLEEP, env={"CUDA_VISIBLE_DEVICES": gpu})
    wait_for(lambda: len(_live(r)) == n_total, timeout=40, what=f"{n_total} workers")


def test_device_and_gpu_devices_choose_the_workers(r, procs):
    _start(procs, r, 3, "cpu", "0", "1")
    streams = {"s-cpu": {"device": "cpu"}, "s-gpu1": {"gpu_devices": [1]}, "s-cuda": {"device": "cuda"}, "s-any": {}}
    for name, over in streams.items():
        s = sink(r, name, **over)
        for _ in range(6):
            s.push(frames(2))
    wait_for(lambda: all(counts(r, s)["published"] == 12 for s in streams), timeout=40, what="all published")
    served = {s: {res.gpu for res in _results(r, s)} for s in streams}
    assert served["s-cpu"] == {"cpu"}
    assert served["s-gpu1"] == {"1"}
    assert served["s-cuda"] <= {"0", "1"} and served["s-cuda"]
    assert served["s-any"] - {"cpu", "0", "1"} == set()


def test_enable_multi_gpu_false_pins_the_stream_to_one_worker_in_order(r, procs):
    _start(procs, r, 2, "cpu", "cpu")
    pinned, free = sink(r, "pinned", pinned=True), sink(r, "free")
    for _ in range(10):
        pinned.push(frames(2))
        free.push(frames(2))
    wait_for(
        lambda: counts(r, "pinned")["published"] == 20 and counts(r, "free")["published"] == 20,
        timeout=40,
        what="all published",
    )
    res = _results(r, "pinned")
    assert len({x.worker for x in res}) == 1, "one worker served the pinned stream"
    assert [x.seq for x in res] == sorted(x.seq for x in res), "results came in order"
    assert len({x.worker for x in _results(r, "free")}) == 2, "the free stream used both"


def test_load_balancing_false_uses_the_fixed_map(r, procs):
    _start(procs, r, 2, "cpu", "cpu")
    live = _live(r)
    streams = [f"fixed{i}" for i in range(4)]
    for name in streams:
        s = sink(r, name, load_balancing=False)
        for _ in range(4):
            s.push(frames(2))
    wait_for(lambda: all(counts(r, s)["published"] == 8 for s in streams), timeout=40, what="all published")
    for name in streams:
        workers = {x.worker for x in _results(r, name)}
        assert workers == {fixed_choice(name, list(live))}, name


def test_max_workers_caps_how_many_serve_a_stream(r, procs):
    _start(procs, r, 3, "cpu", "cpu", "cpu")
    capped = sink(r, "capped", max_workers=2)
    for _ in range(24):
        capped.push(frames(2))
    wait_for(lambda: counts(r, "capped")["published"] == 48, timeout=40, what="all published")
    assert len({x.worker for x in _results(r, "capped")}) == 2


def test_gpu_memory_mb_takes_only_gpus_with_that_much_free(r, procs):
    """NVML readings are simulated as the labels are: written into each GPU worker's hash, where the
    heartbeat puts gpu_memory_used_mb / gpu_memory_total_mb on a machine with NVML."""
    _start(procs, r, 3, "cpu", "0", "1")
    free = {"0": 1000, "1": 7000}
    for name, gpu in _live(r).items():
        if gpu in free:
            r.hset(keys.worker(name), mapping={"gpu_memory_total_mb": 8000, "gpu_memory_used_mb": 8000 - free[gpu]})
    streams = {
        "s-big-gpu": {"device": "cuda", "gpu_memory_mb": 4000},
        "s-big-auto": {"gpu_memory_mb": 4000},
        "s-small": {"device": "cuda", "gpu_memory_mb": 500},
        "s-none": {"device": "cuda", "gpu_memory_mb": 9000},
    }
    for name, over in streams.items():
        s = sink(r, name, **over)
        for _ in range(6):
            s.push(frames(2))
    served = ["s-big-gpu", "s-big-auto", "s-small"]
    wait_for(lambda: all(counts(r, s)["published"] == 12 for s in served), timeout=40, what="all published")
    gpus = {s: {res.gpu for res in _results(r, s)} for s in served}
    assert gpus["s-big-gpu"] == {"1"}, "only GPU 1 has 4000 MB free"
    assert gpus["s-big-auto"] <= {"cpu", "1"} and gpus["s-big-auto"], "CPU workers ignore the requirement"
    assert gpus["s-small"] <= {"0", "1"} and gpus["s-small"]
    assert counts(r, "s-none")["published"] == 0 and r.llen(keys.queue_key("s-none")) == 6, "no GPU fits: it waits"
