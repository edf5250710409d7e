"""What a job function needs from the worker process it runs in: one per process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import redis

from common import keys
from common.clock import RedisClock
from common.config import WorkerSettings
from common.errors import RtaiError
from common.redis_client import describe
from common.wire import packb

from .detector import Detector, NoopDetector, SleepDetector, YoloDetector
from .publisher import Publisher

log = logging.getLogger(__name__)

#: A fault-injection claim outlives any chaos test.
FAULT_TTL_S = 3600


@dataclass
class Runtime:
    client: redis.Redis
    name: str
    settings: WorkerSettings
    gpu: str
    publisher: Publisher
    _detectors: dict[tuple[str, bool | None], Detector] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: This process's clock against Redis': t_start / t_done / the stale check are in Redis time.
    clock: RedisClock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = RedisClock(self.client, what=f"worker {self.name}")

    def now(self) -> float:
        """Now, in Redis time."""
        return self.clock.now()

    def detector(self, variant: str, half: bool | None = None) -> Detector:
        """The model for `variant` on this worker's device (FP16 or not), loaded once and cached."""
        half = self.settings.half if half is None else half
        with self._lock:
            det = self._detectors.get((variant, half))
            if det is None:
                det = self._load(variant, half)
                self._detectors[(variant, half)] = det
                if det.names:
                    self._publish_names(variant, det.names)
            return det

    def _publish_names(self, variant: str, names: list[str]) -> None:
        try:
            self.client.set(keys.model_names(variant), packb(names))
        except redis.ResponseError as exc:  # Redis full: subscribers miss the names until the next load
            log.warning("%s: class names of %s not stored: %s", self.name, variant, describe(exc))

    def _load(self, variant: str, half: bool | None) -> Detector:
        s = self.settings
        if s.detector == "noop":
            return NoopDetector(variant)
        if s.detector == "sleep":
            return SleepDetector(variant, sleep_ms=s.sleep_ms)
        return YoloDetector(variant, device=s.device, half=half)

    def fault(self, point: str) -> None:
        """Fault injection for chaos tests: the first worker of the fleet to reach `point` SIGKILLs
        itself there (once: the claim is a Redis SET NX holding the time of death)."""
        if self.settings.fault_point != point:
            return
        if self.client.set(keys.fault(point), f"{self.name} {time.time()}", nx=True, ex=FAULT_TTL_S):
            log.warning("fault injection: killing %s at %s", self.name, point)
            os.kill(os.getpid(), signal.SIGKILL)


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RtaiError("no worker runtime in this process: jobs run only inside `rtai worker`")
    return _current
