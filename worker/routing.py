"""Which streams a worker may take, from each stream's routing settings (the guide's model_settings).

  device          auto: any worker; cpu: CPU workers only; cuda / cuda:N: GPU workers (GPU N only)
  gpu_devices     list of GPU indices allowed to take the stream (CPU workers excluded); empty: all
  load_balancing  false: a fixed map, crc32(stream) % (eligible devices), instead of any worker
  pinned          true (enable_multi_gpu false): one worker at a time, so results come in order
  max_workers     at most N workers serve the stream at once

Pinning and max_workers share one mechanism: a sorted set of worker leases per stream, claimed and
renewed by an atomic script, so a dead worker's place is free again after SLOT_LEASE_MS.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

import redis

from common import keys
from common.replies import text

#: A worker's place in a pinned or capped stream lapses this long after its last renewal.
SLOT_LEASE_MS = 3000

SLOT_LUA = """
-- KEYS[1]: the stream's slots; ARGV: worker, now ms, expiry ms, max workers
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], 60000)
  return 1
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Routing:
    device: str = "auto"
    gpu_devices: tuple[int, ...] | None = None
    load_balancing: bool = True
    pinned: bool = False
    max_workers: int | None = None

    @classmethod
    def from_hash(cls, h: dict[bytes, bytes]) -> Routing:
        def text(name: str) -> str:
            return h.get(name.encode(), b"").decode()

        gpus = text("gpu_devices")
        max_workers = text("max_workers")
        return cls(
            device=text("device") or "auto",
            gpu_devices=tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else None,
            load_balancing=text("load_balancing") != "0",
            pinned=text("pinned") == "1",
            max_workers=int(max_workers) if max_workers else None,
        )

    @property
    def slot_limit(self) -> int | None:
        if self.pinned:
            return 1
        return self.max_workers


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


def fixed_choice(stream: str, devices: list[str]) -> str | None:
    """The `stream % devices` map, with a stable hash of the stream id."""
    if not devices:
        return None
    return sorted(devices)[zlib.crc32(stream.encode()) % len(devices)]


class Router:
    def __init__(self, client: redis.Redis, *, name: str, gpu: str) -> None:
        self.client = client
        self.name = name
        self.gpu = gpu
        self._slot = client.register_script(SLOT_LUA)
        self.held: set[str] = set()

    def device_id(self, name: str, gpu: str) -> str:
        """A device in the fixed map: a GPU index, or the worker itself for CPU workers."""
        return name if gpu == "cpu" else f"gpu{gpu}"

    def live_devices(self) -> dict[str, str]:
        """Alive worker name -> its GPU label."""
        names = [text(n) for n in self.client.smembers(keys.WORKERS)]
        with self.client.pipeline() as pipe:
            for n in names:
                pipe.exists(keys.worker_alive(n))
                pipe.hget(keys.worker(n), "gpu")
            raw = pipe.execute()
        out = {}
        for i, n in enumerate(names):
            alive, gpu = raw[2 * i], raw[2 * i + 1]
            if alive and gpu:
                out[n] = gpu.decode()
        out[self.name] = self.gpu
        return out

    def eligible(self, streams: list[str]) -> list[str]:
        if not streams:
            return []
        with self.client.pipeline() as pipe:
            for s in streams:
                pipe.hgetall(keys.stream(s))
            routes = [Routing.from_hash(h) for h in pipe.execute()]
        live: dict[str, str] | None = None
        out = []
        for stream, route in zip(streams, routes, strict=True):
            if not device_allows(route, self.gpu):
                continue
            if not route.load_balancing:
                live = live if live is not None else self.live_devices()
                devices = {self.device_id(n, g) for n, g in live.items() if device_allows(route, g)}
                if fixed_choice(stream, list(devices)) != self.device_id(self.name, self.gpu):
                    continue
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
