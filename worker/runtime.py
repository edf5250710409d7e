"""What a job function needs from the worker process it runs in: one per process."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace

import redis
from redis.typing import EncodableT, FieldT

from common import keys
from common.clock import RedisClock
from common.config import WorkerSettings
from common.errors import ModelError, RtaiError
from common.model_names import check_name
from common.redis_client import describe
from common.wire import packb

from . import engines
from .engines import Detector, NoopDetector, SleepDetector
from .publisher import Publisher

log = logging.getLogger(__name__)

#: A fault-injection claim outlives any chaos test.
FAULT_TTL_S = 3600


#: A model that failed to load is tried again after 30 s, then 60 s, ... up to 10 minutes.
MODEL_RETRY_MIN_S = 30.0
MODEL_RETRY_MAX_S = 600.0


@dataclass(frozen=True)
class ModelFailure:
    """A model's last load failure, and when to try again."""

    error: ModelError
    delay_s: float
    retry_at: float

    @classmethod
    def after(cls, error: ModelError, previous: ModelFailure | None) -> ModelFailure:
        delay = MODEL_RETRY_MIN_S if previous is None else min(previous.delay_s * 2, MODEL_RETRY_MAX_S)
        return cls(error=error, delay_s=delay, retry_at=time.monotonic() + delay)


@dataclass
class Runtime:
    client: redis.Redis
    name: str
    settings: WorkerSettings
    gpu: str
    publisher: Publisher
    _detectors: dict[tuple[str, bool | None], Detector] = field(default_factory=dict)
    _failures: dict[str, ModelFailure] = field(default_factory=dict)
    #: Where a loaded model's class names are written: every shard this worker serves (for_shard).
    name_stores: list[redis.Redis] = field(default_factory=list)
    #: Streams whose model this worker has run since it last failed to load it (see jobs.py).
    model_ok_streams: set[str] = field(default_factory=set)
    #: (stream, model) pairs whose unknown class names were said in the stream's reason.
    classes_said: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: This process's clock against Redis': t_start / t_done / the stale check are in Redis time.
    clock: RedisClock = field(init=False)
    infer_calls: int = 0
    infer_frames: int = 0
    infer_s: float = 0.0
    prefetched_jobs: int = 0

    def __post_init__(self) -> None:
        self.clock = RedisClock(self.client, what=f"worker {self.name}")

    def for_shard(self, client: redis.Redis) -> Runtime:
        """The same worker on another shard (common/shards.py): its own client, publisher and
        clock; the loaded models and their failures shared."""
        self.name_stores.append(client)
        return replace(self, client=client, publisher=Publisher(client, self.name, self.gpu))

    def now(self) -> float:
        """Now, in Redis time."""
        return self.clock.now()

    def detector(self, variant: str, half: bool | None = None) -> Detector:
        """The model for `variant` on this worker's device (FP16 or not), loaded once and cached.

        `variant` comes from a batch in Redis: it is checked against the model-name rule again, so a
        forged payload cannot name a path. A model that failed to load fails again at once (the
        cached ModelError) until its backoff has passed, instead of being reloaded for every batch."""
        half = self.settings.half if half is None else half
        with self._lock:
            det = self._detectors.get((variant, half))
            if det is None:
                failure = self._failures.get(variant)
                if failure is not None and time.monotonic() < failure.retry_at:
                    raise ModelError(str(failure.error))
                try:
                    check_name(variant)
                    det = self._load(variant, half)
                except ModelError as exc:
                    self._failures[variant] = failure = ModelFailure.after(exc, failure)
                    log.error("model %s failed to load; next try in %.0f s: %s", variant, failure.delay_s, exc)
                    raise
                self._failures.pop(variant, None)
                self._detectors[(variant, half)] = det
                if det.names:
                    self._publish_names(variant, det.names)
            return det

    def loaded_names(self) -> dict[str, list[str]]:
        """The class names of every model loaded so far, by variant (a lane joining its shard stores
        them there: models preloaded before the lanes existed reached only the home shard)."""
        with self._lock:
            return {variant: det.names for (variant, _half), det in self._detectors.items() if det.names}

    def _publish_names(self, variant: str, names: list[str]) -> None:
        for client in [self.client, *(c for c in self.name_stores if c is not self.client)]:
            try:
                client.set(keys.model_names(variant), packb(names))
            except redis.RedisError as exc:  # Redis full or away: subscribers miss the names until the next load
                log.warning("%s: class names of %s not stored: %s", self.name, variant, describe(exc))

    def _load(self, variant: str, half: bool | None) -> Detector:
        s = self.settings
        if s.detector == "noop":
            return NoopDetector(variant)
        if s.detector == "sleep":
            return SleepDetector(variant, sleep_ms=s.sleep_ms)
        return engines.build(variant, device=s.device, half=half, engine=s.engine, engine_batch=s.engine_batch)

    def count_inference(self, frames: int, seconds: float = 0.0) -> None:
        """One detector call over `frames` frames that took `seconds`: counted here, written to the
        worker's stats hash (`infer_calls`, `infer_frames`, `infer_ms`) by the heartbeat and at
        teardown, not once a call."""
        self.infer_calls += 1
        self.infer_frames += frames
        self.infer_s += seconds

    def engines_in_use(self) -> str:
        """What ran each model at each imgsz, e.g. `rtai-shapes@320=onnx yolo11s@640=ultralytics`."""
        with self._lock:
            detectors = list(self._detectors.values())
        return " ".join(
            f"{det.variant}@{imgsz}={engine}" for det in detectors for imgsz, engine in det.engines_in_use().items()
        )

    def inference_counts(self) -> dict[FieldT, EncodableT]:
        """This process's detector calls, the frames they ran and their time (ms, summed), and the
        jobs whose batch a prefetch had ready."""
        return {
            "infer_calls": self.infer_calls,
            "infer_frames": self.infer_frames,
            "infer_ms": round(self.infer_s * 1000),
            "prefetched_jobs": self.prefetched_jobs,
        }

    def fault(self, point: str) -> None:
        """Fault injection for chaos tests: the first worker of the fleet to reach `point` SIGKILLs
        itself there (once: the claim is a Redis SET NX holding the time of death)."""
        if self.settings.fault_point != point:
            return
        if self.client.set(keys.fault(point), f"{self.name} {time.time()}", nx=True, ex=FAULT_TTL_S):
            log.warning("fault injection: killing %s at %s", self.name, point)
            os.kill(os.getpid(), signal.SIGKILL)

    def fault_on_batch(self, stream: str, batch: int) -> None:
        """Fault injection for chaos tests: SIGKILL this worker each time it runs the batch named by
        the `fault_batch` setting ("<stream>#<batch>"), whichever worker it is."""
        if self.settings.fault_batch == f"{stream}#{batch}":
            log.warning("fault injection: killing %s on batch %s#%d", self.name, stream, batch)
            os.kill(os.getpid(), signal.SIGKILL)


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RtaiError("no worker runtime in this process: jobs run only inside `rtai worker`")
    return _current
