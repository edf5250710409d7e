"""Which streams a worker may take, from each stream's routing settings (the guide's model_settings;
the fields and their codec are in common/stream_settings.py).

The choice itself is pure (`may_take`, over `Peer` records: a worker's name, GPU label and free GPU
memory); `Router` reads those from Redis and claims slots. Pinning and max_workers share one
mechanism: a sorted set of worker leases per stream, claimed and renewed by an atomic script, so a
dead worker's place is free again after SLOT_LEASE_MS.

gpu_memory_mb: a GPU worker takes the stream only when its GPU's free memory, as its last heartbeat
read it from NVML (`gpu_memory_total_mb - gpu_memory_used_mb` in its worker hash), is at least that;
a GPU worker without NVML readings does not take it. CPU workers ignore the requirement (a stream
that must run on a GPU says device cuda). Once a worker has taken such a stream it keeps taking it
for its lifetime: the model it loaded for the stream is part of the memory now in use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import redis

from common import keys, scripts
from common.replies import text
from common.stream_settings import Routing, stream_hash

__all__ = ["Peer", "Router", "Routing", "device_allows", "fixed_choice", "may_take", "memory_allows"]

#: A worker's place in a pinned or capped stream lapses this long after its last renewal.
SLOT_LEASE_MS = 3000


@dataclass(frozen=True, slots=True)
class Peer:
    """A live worker as routing sees it."""

    name: str
    gpu: str  # 'cpu' or a GPU index
    free_mb: int | None = None  # free GPU memory at its last heartbeat; None: unknown (or a CPU worker)

    @property
    def device_id(self) -> str:
        """A device in the fixed map: a GPU index, or the worker itself for CPU workers."""
        return self.name if self.gpu == "cpu" else f"gpu{self.gpu}"


def device_allows(r: Routing, gpu: str) -> bool:
    """Whether a worker on `gpu` ('cpu' or a GPU index) may take a stream routed by r."""
    is_cpu = gpu == "cpu"
    if r.device == "cpu" and not is_cpu:
        return False
    if r.device.startswith("cuda"):
        if is_cpu:
            return False
        _, _, index = r.device.partition(":")
        if index and index != gpu:
            return False
    if r.gpu_devices is not None:
        return not is_cpu and int(gpu) in r.gpu_devices
    return True


def memory_allows(r: Routing, peer: Peer) -> bool:
    """Whether `peer` has the free GPU memory the stream asks for (CPU workers: always)."""
    if r.gpu_memory_mb is None or peer.gpu == "cpu":
        return True
    return peer.free_mb is not None and peer.free_mb >= r.gpu_memory_mb


def fixed_choice(stream: str, devices: list[str]) -> str | None:
    """The `stream % devices` map, with a stable hash of the stream id (common.stream_settings)."""
    if not devices:
        return None
    return sorted(devices)[stream_hash(stream) % len(devices)]


def may_take(stream: str, r: Routing, me: Peer, live: Iterable[Peer] = ()) -> bool:
    """Whether worker `me` may take `stream`, before any slot claim (pinned / max_workers).
    `live` (the other live workers) matters only for the fixed map (load_balancing false)."""
    if not (device_allows(r, me.gpu) and memory_allows(r, me)):
        return False
    if not r.load_balancing:
        devices = {p.device_id for p in live if device_allows(r, p.gpu) and memory_allows(r, p)} | {me.device_id}
        return fixed_choice(stream, list(devices)) == me.device_id
    return True


def _free_mb(used: bytes | None, total: bytes | None) -> int | None:
    try:
        return int(float(total)) - int(float(used)) if used is not None and total is not None else None
    except ValueError:
        return None


class Router:
    def __init__(self, client: redis.Redis, *, name: str, gpu: str) -> None:
        self.client = client
        self.name = name
        self.gpu = gpu
        self._slot = scripts.SLOT.bind(client)
        self.held: set[str] = set()
        #: Streams with a gpu_memory_mb this worker has taken: it keeps them (see the module doc).
        self.admitted: set[str] = set()

    def live_peers(self) -> list[Peer]:
        """Every alive worker (this one included) with its GPU label and free memory."""
        names = [text(n) for n in self.client.smembers(keys.WORKERS)]
        if self.name not in names:
            names.append(self.name)
        with self.client.pipeline() as pipe:
            for n in names:
                pipe.exists(keys.worker_alive(n))
                pipe.hmget(keys.worker(n), "gpu", "gpu_memory_used_mb", "gpu_memory_total_mb")
            raw = pipe.execute()
        out = []
        for i, n in enumerate(names):
            alive, (gpu, used, total) = raw[2 * i], raw[2 * i + 1]
            if n == self.name:
                out.append(Peer(n, self.gpu, _free_mb(used, total)))
            elif alive and gpu:
                out.append(Peer(n, gpu.decode(), _free_mb(used, total)))
        return out

    def eligible(self, streams: list[str]) -> list[str]:
        if not streams:
            return []
        with self.client.pipeline() as pipe:
            for s in streams:
                pipe.hgetall(keys.stream(s))
            routes = [Routing.from_hash(h) for h in pipe.execute()]
        peers: list[Peer] | None = None
        out = []
        for stream, stated in zip(streams, routes, strict=True):
            # a stream this worker took under a memory requirement stays: its model is in the memory used
            route = replace(stated, gpu_memory_mb=None) if stream in self.admitted else stated
            me, live = Peer(self.name, self.gpu), []
            if not route.load_balancing or (route.gpu_memory_mb is not None and self.gpu != "cpu"):
                peers = peers if peers is not None else self.live_peers()
                me = next(p for p in peers if p.name == self.name)
                live = [p for p in peers if p.name != self.name]
            if not may_take(stream, route, me, live):
                continue
            if route.gpu_memory_mb is not None:
                self.admitted.add(stream)
            limit = route.slot_limit
            if limit is not None and not self.claim(stream, limit):
                self.held.discard(stream)
                continue
            if limit is not None:
                self.held.add(stream)
            out.append(stream)
        return out

    def claim(self, stream: str, limit: int) -> bool:
        now = int(time.time() * 1000)
        return bool(self._slot(keys=[keys.slots(stream)], args=[self.name, now, now + SLOT_LEASE_MS, limit]))

    def renew(self) -> None:
        """Keep the places this worker holds (called from the lease thread)."""
        now = int(time.time() * 1000)
        for stream in list(self.held):
            self.client.zadd(keys.slots(stream), {self.name: now + SLOT_LEASE_MS}, xx=True)

    def release(self) -> None:
        for stream in self.held:
            self.client.zrem(keys.slots(stream), self.name)
        self.held.clear()
