"""Start one worker process: settings -> runtime -> WorkerLoop.run()."""

from __future__ import annotations

import logging
import os
import time

import redis

from common import gpu
from common.config import WorkerSettings, apply_offline_model_env, host_name, visible_cuda_devices
from common.errors import ConfigError, RedisUnavailableError
from common.redis_client import check_at_start, describe, wait_until_up
from common.shards import GIVE_UP_S, Shards

from .loop import WorkerLoop
from .publisher import Publisher
from .runtime import Runtime, install
from .threads import default_threads
from .threads import hold as hold_threads

log = logging.getLogger(__name__)


def gpu_label(device: str) -> str:
    """How the worker names its GPU in its name, heartbeat and results: the physical id behind
    `device` (common/gpu.physical_id), or 'cpu'. A CUDA device this process cannot see is an error."""
    if not device.startswith("cuda"):
        return "cpu"
    ident = gpu.physical_id(device)
    if ident is None:
        visible = ",".join(visible_cuda_devices() or [])
        raise ConfigError(f"device {device} is not among CUDA_VISIBLE_DEVICES={visible}")
    return ident


def build_runtime(settings: WorkerSettings) -> Runtime:
    apply_offline_model_env()
    if settings.detector == "yolo":
        # Every core this process was given unless told otherwise, held through Ultralytics' reset.
        hold_threads(settings.threads or default_threads())
    shards = Shards.from_url(settings.redis_url)
    check_shards(shards)  # a process that never reached Redis fails fast, saying why
    client = shards.home
    label = gpu_label(settings.device)
    name = settings.name or f"{host_name()}:{'cpu' if label == 'cpu' else 'gpu' + label}:{os.getpid()}"
    runtime = Runtime(client=client, name=name, settings=settings, gpu=label, publisher=Publisher(client, name, label))
    runtime.now()  # measure the clock against Redis now: a skewed host is reported at start
    install(runtime)
    return runtime


def check_shards(shards: Shards) -> None:
    """Every shard answers at start, or the worker fails now saying why. With several, one that is
    merely unreachable is joined later (the worker serves the others meanwhile); a wrong URL fails."""
    if not shards.sharded:
        check_at_start(shards.urls[0])
        return
    reached = 0
    for i, url in enumerate(shards.urls):
        try:
            check_at_start(url)
            reached += 1
        except RedisUnavailableError as exc:
            if exc.permanent:
                raise
            log.error("worker: %s does not answer yet (%s); serving the others meanwhile", shards.label(i), exc)
    if not reached:
        raise RedisUnavailableError("worker: no Redis shard answers")


def lane_runtimes(runtime: Runtime, shards: Shards) -> list[Runtime]:
    """The worker's runtime on each shard, the home shard's first. With several shards, each lane
    uses the shard's client from `shards`, which `run` opens to give up on a command after
    common/shards.GIVE_UP_S, without retrying it: a shard that hangs (stopped, or cut off by a
    partition: no reply and no refusal) is set aside within that time, and the loop serves the other
    shards meanwhile. With the usual 10 s and three retries, one hung shard held every shard's
    streams (a SIGSTOPped shard: 15 s without a result anywhere)."""
    if not shards.sharded:
        return [runtime]
    return [runtime.for_shard(client) for _i, client in shards.clients()]


def run(settings: WorkerSettings, *, preload: tuple[str, ...] = ()) -> WorkerLoop:
    """Work until asked to stop; a Redis that is lost or refuses writes at start is waited for."""
    runtime = build_runtime(settings)
    for variant in preload:
        runtime.detector(variant)
    shards = Shards.from_url(settings.redis_url, give_up_s=GIVE_UP_S)
    runtimes = lane_runtimes(runtime, shards)
    labels = [shards.label(i) for i in range(len(shards))] if shards.sharded else []
    delay = 0.1
    while True:
        loop = WorkerLoop(runtimes, labels)
        log.info("worker %s on %s (gpu %s) joining the fleet", runtime.name, settings.device, runtime.gpu)
        try:
            loop.run(burst=settings.burst, max_jobs=settings.max_jobs)
        except redis.RedisError as exc:
            if loop.stop_requested:
                return loop
            # Joining failed (Redis refused the writes, or went away): nothing is held (teardown put
            # back anything that was); try again with backoff.
            log.warning(
                "worker %s: could not join the fleet (%s); retrying in %.1f s", runtime.name, describe(exc), delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            wait_until_up(runtime.client, what=f"worker {runtime.name}")
            continue
        return loop
