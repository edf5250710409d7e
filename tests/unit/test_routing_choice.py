"""The routing contract without Redis: the codec the producer writes and workers read, and the pure
choice a worker makes from it (device filters, the fixed map, free GPU memory, slot limits)."""

from __future__ import annotations

import pytest

from common.config import ProducerSettings
from common.stream_settings import FIELDS, Routing, stream_hash
from worker.routing import Peer, device_allows, fixed_choice, may_take, memory_allows

pytestmark = pytest.mark.timeout(10)


def settings(**over: object) -> ProducerSettings:
    return ProducerSettings(stream="s", source="test", redis_url="redis://unused", **over)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"device": "cpu"},
        {"device": "cuda:1", "gpu_devices": [1, 3], "load_balancing": False},
        {"pinned": True, "max_workers": 3, "gpu_memory_mb": 4096},
    ],
)
def test_the_hash_round_trips_as_redis_returns_it(over):
    routing = Routing.from_settings(settings(**over))
    written = routing.to_hash()
    assert set(written) == set(FIELDS)
    as_redis = {k.encode(): v.encode() for k, v in written.items()}  # what HGETALL gives back
    assert Routing.from_hash(as_redis) == routing == Routing.from_hash(written)
    for key, value in over.items():
        got = getattr(routing, key)
        assert (tuple(value) if isinstance(value, list) else value) == got


def test_a_hash_without_routing_fields_routes_anywhere():
    assert Routing.from_hash({b"source": b"x", b"state": b"running"}) == Routing()
    assert Routing.from_hash({}).slot_limit is None


def test_slot_limit_pinned_is_one_worker():
    assert Routing(pinned=True, max_workers=4).slot_limit == 1
    assert Routing(max_workers=4).slot_limit == 4


@pytest.mark.parametrize(
    ("routing", "allowed"),
    [
        (Routing(), {"cpu", "0", "1"}),
        (Routing(device="cpu"), {"cpu"}),
        (Routing(device="cuda"), {"0", "1"}),
        (Routing(device="cuda:1"), {"1"}),
        (Routing(gpu_devices=(0,)), {"0"}),
        (Routing(device="cuda", gpu_devices=(1,)), {"1"}),
    ],
)
def test_device_filters(routing, allowed):
    assert {g for g in ("cpu", "0", "1") if device_allows(routing, g)} == allowed


def test_memory_requirement_takes_gpus_with_that_much_free_and_ignores_cpu_workers():
    need = Routing(gpu_memory_mb=4000)
    assert memory_allows(need, Peer("w", "1", free_mb=4000))
    assert not memory_allows(need, Peer("w", "0", free_mb=3999))
    assert not memory_allows(need, Peer("w", "0", free_mb=None)), "no NVML reading: not known to fit"
    assert memory_allows(need, Peer("w", "cpu"))
    assert memory_allows(Routing(), Peer("w", "0", free_mb=None))
    assert not may_take("s", Routing(device="cuda", gpu_memory_mb=4000), Peer("w", "0", free_mb=100))
    assert not may_take("s", Routing(device="cuda", gpu_memory_mb=4000), Peer("w", "cpu"))


def test_fixed_map_is_crc32_of_the_stream_over_sorted_devices():
    devices = ["gpu1", "gpu0", "cpu-w"]
    for stream in ("cam-1", "cam-2", "lobby", "x" * 40):
        assert fixed_choice(stream, devices) == sorted(devices)[stream_hash(stream) % 3]
    assert fixed_choice("s", []) is None


def test_fixed_map_exactly_one_worker_per_device_takes_each_stream():
    workers = [Peer("a", "cpu"), Peer("b", "0"), Peer("c", "1"), Peer("d", "1")]
    route = Routing(load_balancing=False)
    for i in range(40):
        stream = f"cam{i}"
        takers = {w.device_id for w in workers if may_take(stream, route, w, [p for p in workers if p != w])}
        assert len(takers) == 1, stream
        assert takers == {fixed_choice(stream, ["a", "gpu0", "gpu1"])}


def test_fixed_map_leaves_out_gpus_without_the_memory():
    workers = [Peer("b", "0", free_mb=500), Peer("c", "1", free_mb=9000), Peer("e", "2", free_mb=9000)]
    route = Routing(device="cuda", load_balancing=False, gpu_memory_mb=4000)
    seen = set()
    for i in range(40):
        stream = f"cam{i}"
        takers = [w.name for w in workers if may_take(stream, route, w, [p for p in workers if p != w])]
        assert takers == [{"gpu1": "c", "gpu2": "e"}[fixed_choice(stream, ["gpu1", "gpu2"])]], stream
        seen.update(takers)
    assert seen == {"c", "e"}, "both GPUs with the memory take a share"
