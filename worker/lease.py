"""A worker's lease: the heartbeat that keeps `rtai:worker:<name>:alive`, and the reaper that
requeues the in-flight jobs of workers whose lease ran out (the broker's requeue_dead).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import redis
from redis.typing import EncodableT, FieldT

from common import gpu, keys
from common.redis_client import describe, write_rejected
from common.replies import text
from common.states import WorkerState

from . import threads
from .broker import requeue_dead
from .routing import Router
from .runtime import Runtime

log = logging.getLogger(__name__)

#: A worker's stats hash disappears this long after its last heartbeat.
WORKER_TTL_S = 30


def reap(client: redis.Redis, me: str) -> list[str]:
    """Requeue jobs of workers whose lease ran out; forget workers long gone."""
    requeued: list[str] = []
    for raw in client.smembers(keys.WORKERS):
        name = text(raw)
        if name == me:
            continue
        ids = requeue_dead(client, name, force=False, died=True)
        if ids:
            log.warning("worker %s: lease of %s ran out; requeued %s", me, name, ids)
            requeued.extend(ids)
        elif not client.exists(keys.worker(name), keys.worker_alive(name)):
            client.srem(keys.WORKERS, name)
    return requeued


def keep_lease(client: redis.Redis, name: str, exc: redis.RedisError, lease_ms: int) -> None:
    """A Redis that refuses writes (full) still runs PEXPIRE: keep the lease, so that other
    workers do not take this live worker's job."""
    if not write_rejected(exc):
        return
    try:
        client.pexpire(keys.worker_alive(name), lease_ms)
    except redis.RedisError as again:
        log.debug("worker %s: lease not renewed: %s", name, describe(again))


class Lease:
    """The heartbeat thread of one worker: every heartbeat it renews the lease and the stats hash,
    renews the routing slots and reaps workers whose lease ran out."""

    def __init__(self, runtime: Runtime, router: Router, *, state: Callable[[], WorkerState]) -> None:
        self.runtime = runtime
        self.client = runtime.client
        self.name = runtime.name
        self.router = router
        self._state = state
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rtai-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _loop(self) -> None:
        s = self.runtime.settings
        lease_ms = int(s.lease_s * 1000)
        last_frames, last_t = 0, time.monotonic()
        gpu_index = gpu.nvml_index(s.device)
        failing = False
        while not self._stop.wait(s.heartbeat_s):
            try:
                now = time.monotonic()
                frames = int(self.client.hget(keys.worker(self.name), "frames") or 0)
                fps = (frames - last_frames) / max(now - last_t, 1e-6)
                last_frames, last_t = frames, now
                stats: dict[FieldT, EncodableT] = {
                    "state": self._state().value,
                    "t_seen": self.runtime.now(),
                    "fps": round(fps, 2),
                    "clock_offset_s": round(self.runtime.clock.offset, 3),
                    **self.runtime.inference_counts(),
                    "engines": self.runtime.engines_in_use(),
                }
                seen = threads.seen()
                if seen is not None:
                    stats["torch_threads"] = seen  # as seen inside the last forward pass
                if gpu_index is not None:
                    stats.update({f"gpu_{k}": v for k, v in gpu.stats(gpu_index).items() if v is not None})
                with self.client.pipeline() as pipe:
                    pipe.sadd(keys.WORKERS, self.name)
                    pipe.set(keys.worker_alive(self.name), os.getpid(), px=lease_ms)
                    pipe.hset(keys.worker(self.name), mapping=stats)
                    pipe.expire(keys.worker(self.name), WORKER_TTL_S)
                    pipe.execute()
                self.router.renew()
                reap(self.client, self.name)
                if failing:
                    log.info("worker %s: heartbeat works again", self.name)
                failing = False
            except redis.RedisError as exc:
                if not failing:  # once per episode: a full Redis fails every beat
                    log.warning("worker %s: heartbeat failed: %s", self.name, describe(exc))
                failing = True
                keep_lease(self.client, self.name, exc, lease_ms)
