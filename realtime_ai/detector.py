"""The guide's in-process multi-GPU API: one model replica per device, least-loaded dispatch, failover.

The fleet runs one worker process per GPU (docs/design.md); this is the seed's API for detections in the
caller's own process. Several replicas may share a device (``"gpu_devices": ["cpu", "cpu"]``), which makes
dispatch and failover testable without GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common import gpu
from common.config import DEFAULT_MODEL
from common.errors import ConfigError, GpuError, ModelError, RtaiError, SchemaError
from common.stream_settings import stream_hash
from worker import engines
from worker.engines import Detector

log = logging.getLogger(__name__)

#: What a failing replica can raise: CUDA faults and OOM are RuntimeErrors; a half-torn-down model
#: gives AttributeError/TypeError; inputs are checked before dispatch, so a ValueError here is the replica's.
REPLICA_FAULTS = (RuntimeError, OSError, MemoryError, ValueError, TypeError, AttributeError, RtaiError)
#: One retry per other replica is enough on the 2-4 GPU machines the guide targets.
DEFAULT_MAX_RETRIES = 3
#: The guide's default input size; the project's own model is trained at 320.
DEFAULT_IMGSZ = 640
#: Apex's AMP levels, as the guide's `amp_level` names them: O0 is FP32, O1-O3 all mean FP16 here.
AMP_LEVELS = {"O0": False, "O1": True, "O2": True, "O3": True}


class DetectorType(str, Enum):
    """The guide's model names; each maps to a stock YOLO11 weights file (see worker/models.py)."""

    MULTI_GPU_YOLOV11_NANO = "multi_gpu_yolov11n"
    MULTI_GPU_YOLOV11_SMALL = "multi_gpu_yolov11s"
    MULTI_GPU_YOLOV11_MEDIUM = "multi_gpu_yolov11m"
    MULTI_GPU_YOLOV11_LARGE = "multi_gpu_yolov11l"
    MULTI_GPU_YOLOV11_XLARGE = "multi_gpu_yolov11x"


class FailoverStrategy(str, Enum):
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"


class MultiGPUConfig(BaseModel):
    """The guide's config dict, closed: an unknown key is an error, not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: str | None = None
    variant: str | None = None
    gpu_devices: list[int | str] | None = None
    confidence_threshold: float = Field(0.25, ge=0.0, le=1.0)
    imgsz: int = Field(DEFAULT_IMGSZ, ge=32, le=4096)
    half_precision: bool = True
    enable_failover: bool = True
    failover_strategy: FailoverStrategy = FailoverStrategy.LEAST_LOADED
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0)
    #: false: one replica (on the first device) instead of one per device.
    enable_multi_gpu: bool = True
    #: false: the guide's fixed map, stream_id % replicas (crc32 of a string id, as the fleet does).
    load_balancing: bool = True
    #: Batches dispatched at once across all replicas, running or waiting for their replica (None: no cap).
    max_workers: int | None = Field(None, ge=1, le=1024)
    #: Distinct stream ids with a batch in flight at once; a batch of another stream waits (None: any).
    parallel_streams: int | None = Field(None, ge=1, le=1024)
    #: Aliases of half_precision (FP16 on CUDA replicas): mixed_precision true/false; amp_level O0 (FP32) or O1-O3.
    mixed_precision: bool | None = None
    amp_level: str | None = Field(None, pattern=r"^[Oo][0-3]$")
    #: Free GPU memory (MB, NVML) a device needs to get a replica; CPU devices ignore it.
    gpu_memory_mb: int | None = Field(None, ge=1, le=16_777_216)
    #: The inference engine of every replica, as the fleet worker's `--engine` (worker/engines/).
    engine: Literal["auto", "torch", "tensor", "onnx", "tensorrt", "ultralytics"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _precision_aliases(cls, data: object) -> object:
        """half_precision, mixed_precision and amp_level are one setting: resolve it into half_precision."""
        if not isinstance(data, dict):
            return data
        given = {k: data[k] for k in ("half_precision", "mixed_precision") if isinstance(data.get(k), bool)}
        level = data.get("amp_level")
        if isinstance(level, str) and level.upper() in AMP_LEVELS:
            given["amp_level"] = AMP_LEVELS[level.upper()]
        if len(set(given.values())) > 1:
            raise ValueError(f"half_precision, mixed_precision and amp_level disagree ({given}); give one of them")
        if given:
            data = {**data, "half_precision": next(iter(given.values()))}
        return data

    @field_validator("model_type", "variant", mode="before")
    @classmethod
    def _enum_value(cls, value: object) -> object:
        return value.value if isinstance(value, DetectorType) else value

    @field_validator("gpu_devices")
    @classmethod
    def _devices(cls, value: list[int | str] | None) -> list[int | str] | None:
        if value is not None:
            if not value:
                raise ValueError("must name at least one device (or be null for all GPUs)")
            for dev in value:
                device_name(dev)
        return value

    @property
    def model(self) -> str:
        return self.model_type or self.variant or DEFAULT_MODEL


def parse_config(config: dict[str, Any] | None) -> MultiGPUConfig:
    """The guide's dict as a MultiGPUConfig; ConfigError naming each bad key."""
    data = dict(config or {})
    if data.get("model_type") and data.get("variant"):
        a, b = (str(getattr(data[k], "value", data[k])) for k in ("model_type", "variant"))
        if a != b:
            raise ConfigError(f"model_type {a!r} and variant {b!r} disagree; give one of them")
    try:
        return MultiGPUConfig(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid multi-GPU config: {problems}") from exc


def device_name(dev: int | str) -> str:
    """0 -> 'cuda:0'; 'cuda' -> 'cuda:0'; 'cpu' and 'cuda:N' as they are; anything else is a ValueError."""
    if isinstance(dev, bool):
        raise ValueError(f"bad device {dev!r}")
    if isinstance(dev, int):
        if dev < 0:
            raise ValueError(f"bad GPU index {dev}")
        return f"cuda:{dev}"
    text = dev.strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    kind, _, idx = text.partition(":")
    if kind == "cuda" and idx.isdigit():
        return f"cuda:{int(idx)}"
    raise ValueError(f"bad device {dev!r}: use a GPU index, 'cpu' or 'cuda:N'")


def free_mb(device: str) -> int | None:
    """Free memory of a CUDA device in MB, from NVML; None when NVML cannot say."""
    index = gpu.nvml_index(device)
    if index is None:
        return None
    st = gpu.stats(index)
    used, total = st.get("memory_used_mb"), st.get("memory_total_mb")
    return int(total) - int(used) if used is not None and total is not None else None


@dataclass
class Replica:
    """One model on one device, with the counters dispatch and stats read."""

    name: str
    device: str
    detector: Detector
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    frames: int = 0
    batches: int = 0
    errors: int = 0
    latency_ms_total: float = 0.0
    healthy: bool = True
    last_error: str | None = None

    def run(self, frames: list[np.ndarray], *, conf: float, imgsz: int) -> tuple[list[np.ndarray], float]:
        """Predict under this replica's lock (one batch at a time per model); boxes and latency in ms."""
        with self.lock:
            t0 = time.perf_counter()
            boxes = self.detector.predict(frames, conf=conf, imgsz=imgsz)
            return boxes, (time.perf_counter() - t0) * 1000.0


class MultiGPUYOLOv11Detector:
    """The guide's detector: replicas on `gpu_devices`, dispatch by `failover_strategy`, retry on failure."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = parse_config(config)
        self.enable_failover = self.config.enable_failover
        self.failover_strategy = self.config.failover_strategy
        self.replicas: list[Replica] = []
        self.names: list[str] = []
        self.failovers = 0
        self._rr = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch_gate: asyncio.Semaphore | None = None
        self._streams_gate: asyncio.Condition | None = None
        self._active_streams: Counter[Any] = Counter()
        self.in_flight_batches = self.peak_in_flight_batches = self.peak_parallel_streams = 0

    # --- loading ---------------------------------------------------------------------------------------------
    def devices(self) -> list[str]:
        """The devices replicas go on: the configured ones, else every visible GPU, else one CPU."""
        import torch  # noqa: PLC0415  (heavy; only when a model is about to load)

        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if self.config.gpu_devices is None:
            devices = [f"cuda:{i}" for i in range(visible)] or ["cpu"]
        else:
            devices = [device_name(d) for d in self.config.gpu_devices]
            for dev in devices:
                if dev.startswith("cuda") and int(dev.partition(":")[2]) >= visible:
                    raise GpuError(f"gpu_devices: {dev} is not available ({visible} CUDA device(s) visible)")
        need = self.config.gpu_memory_mb
        if need is not None:
            fits = [d for d in devices if not d.startswith("cuda") or (free_mb(d) or 0) >= need]
            if not fits:
                raise GpuError(f"gpu_memory_mb: no device in {', '.join(devices)} has {need} MB free (NVML)")
            devices = fits
        return devices if self.config.enable_multi_gpu else devices[:1]

    def select_best_gpu_for_task(self, memory_requirement: int = 0) -> int | None:
        """The guide's dynamic allocation: the GPU (torch index, among this detector's devices) with the
        most free memory (NVML) if it has at least `memory_requirement` MB free; None when none has."""
        if self.replicas:
            candidates = [r.device for r in self.replicas]
        elif self.config.gpu_devices is not None:
            candidates = [device_name(d) for d in self.config.gpu_devices]
        else:
            candidates = [f"cuda:{i}" for i in range(gpu.count())]
        free = {d: free_mb(d) for d in dict.fromkeys(candidates) if d.startswith("cuda")}
        fits = {d: mb for d, mb in free.items() if mb is not None and mb >= memory_requirement}
        if not fits:
            return None
        return int(max(fits, key=lambda d: fits[d]).partition(":")[2])

    async def load_model(self) -> None:
        """Load one replica per device (one after another: Ultralytics loading is not thread-safe)."""
        if self.replicas:
            return
        replicas = []
        for i, device in enumerate(self.devices()):
            try:
                det = await asyncio.to_thread(
                    engines.build,
                    self.config.model,
                    device=device,
                    half=self.config.half_precision,
                    engine=self.config.engine,
                    warmup_imgsz=self.config.imgsz,
                    allow_path=True,  # the program's own choice; still loaded safely (worker/weights.py)
                )
            except RuntimeError as exc:  # CUDA out of memory or a broken device during warm-up
                raise GpuError(f"replica{i} on {device}: cannot load {self.config.model!r}: {exc}") from exc
            replicas.append(Replica(name=f"replica{i}", device=device, detector=det))
        self.replicas = replicas
        self.names = replicas[0].detector.names
        log.info("loaded %s on %s", self.config.model, ", ".join(r.device for r in replicas))

    async def close(self) -> None:
        """Drop every replica (their memory is freed once no batch holds them)."""
        self.replicas = []

    # --- dispatch ----------------------------------------------------------------------------------------------
    def _pick(self, tried: set[str]) -> Replica | None:
        candidates = [r for r in self.replicas if r.healthy and r.name not in tried]
        if not candidates:
            return None
        if self.failover_strategy == FailoverStrategy.ROUND_ROBIN:
            return candidates[next(self._rr) % len(candidates)]
        return min(candidates, key=lambda r: (r.in_flight, r.frames))

    def _replica(self, name: str) -> Replica:
        for r in self.replicas:
            if r.name == name:
                return r
        raise ConfigError(f"no replica {name!r}; there are {', '.join(r.name for r in self.replicas) or 'none'}")

    def mark_unhealthy(self, replica: str, reason: str) -> None:
        r = self._replica(replica)
        r.healthy, r.last_error = False, reason
        log.warning("%s on %s marked unhealthy: %s", r.name, r.device, reason)

    def mark_healthy(self, replica: str) -> None:
        """Put a replica back into dispatch (after the operator fixed it, or a probe passed)."""
        r = self._replica(replica)
        r.healthy, r.last_error = True, None
        log.info("%s on %s back in service", r.name, r.device)

    async def probe(self) -> list[str]:
        """Run a one-frame predict on every unhealthy replica; those that pass are healthy again."""
        restored = []
        blank = np.zeros((self.config.imgsz, self.config.imgsz, 3), dtype=np.uint8)
        for r in [r for r in self.replicas if not r.healthy]:
            try:
                await asyncio.to_thread(r.run, [blank], conf=self.config.confidence_threshold, imgsz=self.config.imgsz)
            except REPLICA_FAULTS as exc:
                r.last_error = f"{type(exc).__name__}: {exc}"
                continue
            self.mark_healthy(r.name)
            restored.append(r.name)
        return restored

    async def detect_batch(
        self,
        frames: list[np.ndarray],
        frame_ids: list[Any] | None = None,
        stream_ids: list[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Detections for each BGR frame, from one replica; on a replica fault, retried on another."""
        if not self.replicas:
            raise ModelError("no replica loaded: await load_model() first")
        frames = list(frames)
        frame_ids = list(range(len(frames))) if frame_ids is None else list(frame_ids)
        stream_ids = ["default"] * len(frames) if stream_ids is None else list(stream_ids)
        _check_inputs(frames, frame_ids, stream_ids)
        if not frames:
            return []
        async with self._admit(set(stream_ids)):
            if self.config.load_balancing or len(self.replicas) == 1:
                return await self._dispatch(frames, frame_ids, stream_ids, None)
            groups: dict[int, list[int]] = {}
            for i, sid in enumerate(stream_ids):
                groups.setdefault(self.fixed_replica(sid), []).append(i)
            parts = await asyncio.gather(
                *(
                    self._dispatch(
                        [frames[i] for i in idx],
                        [frame_ids[i] for i in idx],
                        [stream_ids[i] for i in idx],
                        self.replicas[k],
                    )
                    for k, idx in groups.items()
                )
            )
        out: list[dict[str, Any]] = [{}] * len(frames)
        for idx, part in zip(groups.values(), parts, strict=True):
            for i, res in zip(idx, part, strict=True):
                out[i] = res
        return out

    def fixed_replica(self, stream_id: Any) -> int:
        """The guide's fixed map: stream_id % replicas; a string id by its crc32 (as the fleet maps streams)."""
        key = (
            stream_id if isinstance(stream_id, int) and not isinstance(stream_id, bool) else stream_hash(str(stream_id))
        )
        return key % len(self.replicas)

    def _gates(self) -> None:
        """asyncio primitives belong to one event loop: make them again when a new loop calls."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._batch_gate = asyncio.Semaphore(self.config.max_workers) if self.config.max_workers else None
            self._streams_gate = asyncio.Condition()
            self._active_streams = Counter()

    @contextlib.asynccontextmanager
    async def _admit(self, streams: set[Any]) -> AsyncIterator[None]:
        """Hold a batch until its streams fit in parallel_streams (a lone batch always fits)."""
        self._gates()
        limit, cond = self.config.parallel_streams, self._streams_gate
        if limit is None or cond is None:
            yield
            return
        async with cond:
            await cond.wait_for(lambda: not self._active_streams or len(set(self._active_streams) | streams) <= limit)
            self._active_streams.update(streams)
            self.peak_parallel_streams = max(self.peak_parallel_streams, len(self._active_streams))
        try:
            yield
        finally:
            async with cond:
                self._active_streams.subtract(streams)
                self._active_streams = +self._active_streams  # drop streams at zero
                cond.notify_all()

    async def _run(self, replica: Replica, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
        """One batch on one replica, counted against max_workers."""
        gate = self._batch_gate
        async with gate if gate is not None else contextlib.nullcontext():
            self.in_flight_batches += 1
            self.peak_in_flight_batches = max(self.peak_in_flight_batches, self.in_flight_batches)
            try:
                return await asyncio.to_thread(
                    replica.run, frames, conf=self.config.confidence_threshold, imgsz=self.config.imgsz
                )
            finally:
                self.in_flight_batches -= 1

    async def _dispatch(
        self, frames: list[np.ndarray], frame_ids: list[Any], stream_ids: list[Any], first: Replica | None
    ) -> list[dict[str, Any]]:
        """Run on `first` (the fixed map's replica) or the strategy's pick; on a fault, another replica."""
        tried: set[str] = set()
        attempts = 1 + (self.config.max_retries if self.enable_failover else 0)
        for _ in range(attempts):
            replica = first if first is not None and first.healthy and not tried else self._pick(tried)
            if replica is None:
                break
            if tried:
                self.failovers += 1
                log.info("retrying a %d-frame batch on %s (%s)", len(frames), replica.name, replica.device)
            tried.add(replica.name)
            replica.in_flight += len(frames)
            try:
                boxes, latency_ms = await self._run(replica, frames)
            except REPLICA_FAULTS as exc:
                replica.errors += 1
                self.mark_unhealthy(replica.name, f"{type(exc).__name__}: {exc}")
                continue
            finally:
                replica.in_flight -= len(frames)
            replica.frames += len(frames)
            replica.batches += 1
            replica.latency_ms_total += latency_ms
            return [
                self._result(b, fid, sid, replica, latency_ms)
                for b, fid, sid in zip(boxes, frame_ids, stream_ids, strict=True)
            ]
        raise GpuError(self._no_replica_message(tried))

    def _no_replica_message(self, tried: set[str]) -> str:
        reasons = "; ".join(f"{r.name} ({r.device}): {r.last_error or 'healthy'}" for r in self.replicas)
        if tried and any(r.healthy for r in self.replicas):  # stopped by policy, not for want of replicas
            why = "failover is disabled" if not self.enable_failover else f"max_retries={self.config.max_retries}"
            return f"batch failed on {', '.join(sorted(tried))} and {why}: {reasons}"
        return f"no healthy replica left for the batch (tried {len(tried)}): {reasons}"

    def _result(self, boxes: np.ndarray, frame_id: Any, stream_id: Any, replica: Replica, latency_ms: float) -> dict:
        rows = [[*(float(v) for v in row[:5]), int(row[5])] for row in boxes]
        return {
            "frame_id": frame_id,
            "stream_id": stream_id,
            "boxes": rows,
            "labels": [self.names[c] if 0 <= c < len(self.names) else str(c) for c in (int(row[5]) for row in rows)],
            "device": replica.device,
            "replica": replica.name,
            "latency_ms": round(latency_ms, 2),
        }

    # --- stats -------------------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        """Zero every counter (health is left as it is)."""
        self.failovers = self.peak_in_flight_batches = self.peak_parallel_streams = 0
        for r in self.replicas:
            r.frames = r.batches = r.errors = 0
            r.latency_ms_total = 0.0

    def get_multi_gpu_stats(self) -> dict[str, Any]:
        """Per-replica counters, the share of frames each replica took, and NVML utilisation per GPU."""
        total = sum(r.frames for r in self.replicas)
        utilization: dict[str, int | None] = {}
        for r in self.replicas:
            index = gpu.nvml_index(r.device)
            utilization[r.device] = gpu.stats(index).get("utilization_pct") if index is not None else None
        return {
            "model": self.config.model,
            "strategy": FailoverStrategy(self.failover_strategy).value,
            "enable_failover": self.enable_failover,
            "total_frames": total,
            "total_batches": sum(r.batches for r in self.replicas),
            "failovers": self.failovers,
            "load_balancing": self.config.load_balancing,
            "max_workers": self.config.max_workers,
            "parallel_streams": self.config.parallel_streams,
            "peak_in_flight_batches": self.peak_in_flight_batches,
            "peak_parallel_streams": self.peak_parallel_streams,
            "healthy_replicas": sum(r.healthy for r in self.replicas),
            "load_distribution": {r.name: (r.frames / total if total else 0.0) for r in self.replicas},
            "gpu_utilization": utilization,
            "replicas": {
                r.name: {
                    "device": r.device,
                    "frames": r.frames,
                    "batches": r.batches,
                    "errors": r.errors,
                    "in_flight": r.in_flight,
                    "healthy": r.healthy,
                    "last_error": r.last_error,
                    "avg_latency_ms": round(r.latency_ms_total / r.batches, 2) if r.batches else None,
                }
                for r in self.replicas
            },
        }


def _check_inputs(frames: list[Any], frame_ids: list[Any], stream_ids: list[Any]) -> None:
    """Bad input is the caller's fault: refuse it before it can make a healthy replica look broken."""
    if not len(frames) == len(frame_ids) == len(stream_ids):
        raise SchemaError(
            f"detect_batch: {len(frames)} frames but {len(frame_ids)} frame_ids and {len(stream_ids)} stream_ids"
        )
    for i, f in enumerate(frames):
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 or 0 in f.shape:
            what = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise SchemaError(f"detect_batch: frame {i} is {what}; expected a BGR uint8 array (H, W, 3)")
