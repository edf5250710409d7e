"""Start one worker process: settings -> runtime -> FleetWorker.work()."""

from __future__ import annotations

import logging
import os
import time

import redis

from common.config import WorkerSettings, apply_offline_model_env, host_name, visible_cuda_devices
from common.redis_client import connect, describe, wait_until_up

from .fleet_worker import FleetWorker
from .publisher import Publisher
from .runtime import Runtime, install
from .threads import default_threads
from .threads import hold as hold_threads

log = logging.getLogger(__name__)


def gpu_label(device: str) -> str:
    """The physical GPU index behind `device` (honouring CUDA_VISIBLE_DEVICES), or 'cpu'."""
    if not device.startswith("cuda"):
        return "cpu"
    _, _, idx = device.partition(":")
    ordinal = int(idx or 0)
    visible = visible_cuda_devices()
    if visible and ordinal < len(visible):
        return visible[ordinal]
    return str(ordinal)


def build_runtime(settings: WorkerSettings) -> Runtime:
    apply_offline_model_env()
    if settings.detector == "yolo":
        # Every core this process was given unless told otherwise, held through Ultralytics' reset.
        hold_threads(settings.threads or default_threads())
    client = connect(settings.redis_url)  # a process that never reached Redis fails fast, saying why
    label = gpu_label(settings.device)
    name = settings.name or f"{host_name()}:{'cpu' if label == 'cpu' else 'gpu' + label}:{os.getpid()}"
    runtime = Runtime(client=client, name=name, settings=settings, gpu=label, publisher=Publisher(client, name, label))
    runtime.now()  # measure the clock against Redis now: a skewed host is reported at start
    install(runtime)
    return runtime


def run(settings: WorkerSettings, *, preload: tuple[str, ...] = ()) -> FleetWorker:
    """Work until asked to stop; a lost Redis is waited for (with backoff) and the work resumes."""
    runtime = build_runtime(settings)
    for variant in preload:
        runtime.detector(variant)
    resuming, delay = False, 0.1
    while True:
        worker = FleetWorker(runtime)
        worker.resuming = resuming
        log.info("worker %s on %s (gpu %s) joining the fleet", runtime.name, settings.device, runtime.gpu)
        try:
            worker.work(burst=settings.burst, max_jobs=settings.max_jobs, logging_level="WARNING")
        except redis.RedisError as exc:
            # Registering failed (RQ's loop catches everything after that): Redis refused the
            # writes (full, read-only) or went away. Nothing is held yet; try again with backoff.
            log.warning(
                "worker %s: could not join the fleet (%s); retrying in %.1f s", runtime.name, describe(exc), delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            resuming = True
            continue
        delay, resuming = 0.1, True
        if worker.stop_requested or settings.burst or settings.max_jobs:
            return worker
        # RQ's loop gave up (it quits on Redis errors): wait for Redis, then take jobs again under the
        # same name (RQ refuses to register a name it still thinks alive, so close that first).
        log.warning("worker %s: work loop ended on an error; waiting for Redis to resume", runtime.name)
        wait_until_up(runtime.client, what=f"worker {runtime.name}")
        try:
            worker.register_death()
        except redis.RedisError as exc:
            log.warning("worker %s: could not close the old registration: %s", runtime.name, exc)
