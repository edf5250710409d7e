"""Request and response bodies of the control-plane API, the older guide's body accepted as-is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.analytics_settings import AnalyticsSettings
from common.config import DEFAULT_IMGSZ, GpuIndex
from common.errors import SourceRefusedError
from common.keys import STREAM_ID_PATTERN
from common.model_names import NAME_MAX_LEN, NAME_PATTERN
from common.sources import check_scheme

#: Model names, never paths: the guide's names, stock YOLO11, the bundled model, RTAI_WEIGHTS_DIR files.
VARIANT_PATTERN = NAME_PATTERN


class _Body(BaseModel):
    #: NaN and Infinity parse as JSON numbers (Python's json) but are never a valid setting.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StreamConfig(_Body):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="a URL whose scheme matches protocol (rtsp(s), http, https, rtmp); with protocol file, "
        "a file under the operator's media root; or demo",
    )
    protocol: Literal["rtsp", "http", "https", "rtmp", "file"] = "rtsp"
    stream_id: str | None = Field(None, pattern=STREAM_ID_PATTERN, description="defaults to the service id")
    loop: bool = Field(False, description="loop a video file")

    @model_validator(mode="after")
    def _scheme_matches_protocol(self) -> StreamConfig:
        try:
            check_scheme(self.url, self.protocol)
        except SourceRefusedError as exc:
            raise ValueError(f"url: {exc}") from exc
        return self


class ModelSettings(_Body):
    variant: str = Field(
        "multi_gpu_yolov11s",
        max_length=NAME_MAX_LEN,
        pattern=VARIANT_PATTERN,
        description="a model name (GET /models lists them); paths are refused",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    enable_multi_gpu: bool = Field(True, description="false pins the stream to one worker (ordered results)")
    load_balancing: bool = Field(True, description="false: the fixed stream % gpus map")
    gpu_devices: list[GpuIndex] | None = Field(
        None, max_length=256, description="GPU indices allowed to take the stream"
    )
    max_workers: int | None = Field(None, ge=1, le=1024, description="most workers serving the stream at once")
    gpu_memory_mb: int | None = Field(
        None,
        ge=1,
        le=16_777_216,
        description="free GPU memory (MB, NVML) a GPU worker needs to take the stream; CPU workers ignore it",
    )
    confidence_threshold: float = Field(0.25, ge=0.0, le=1.0)
    half_precision: bool = Field(True, description="FP16 on CUDA workers (CPU workers run FP32)")
    imgsz: int = Field(DEFAULT_IMGSZ, ge=32, le=4096)


class ProcessingSettings(_Body):
    max_fps: float = Field(30, gt=0, le=240)
    batch_size: int = Field(2, ge=1, le=64)
    parallel_streams: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="a service is one stream, so this is how many of its batches run at once, one per worker: "
        "model_settings.max_workers (give either, or both equal)",
    )


class StartRequest(_Body):
    stream_config: StreamConfig
    model_settings: ModelSettings = ModelSettings()
    processing_settings: ProcessingSettings = ProcessingSettings()
    analytics_settings: AnalyticsSettings | None = Field(
        None, description="classes, zones, lines, dwell, tracking, snapshots (not in the guide; optional)"
    )

    @model_validator(mode="after")
    def _parallel_streams_is_max_workers(self) -> StartRequest:
        p, m = self.processing_settings.parallel_streams, self.model_settings.max_workers
        if p is not None and m is not None and p != m:
            raise ValueError(
                f"processing_settings.parallel_streams ({p}) and model_settings.max_workers ({m}) disagree: "
                "a service is one stream, so both mean how many of its batches run at once; give one of them"
            )
        return self

    @property
    def max_workers(self) -> int | None:
        """How many workers may serve the stream at once (max_workers, or parallel_streams)."""
        return self.model_settings.max_workers or self.processing_settings.parallel_streams


class StartResponse(BaseModel):
    service_id: str
    stream_id: str
    status: str
    results_channel: str


class StopResponse(BaseModel):
    service_id: str
    status: str


class Latency(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class StatusResponse(BaseModel):
    service_id: str
    state: str
    reason: str
    fps_in: float
    fps_out: float
    ledger: dict[str, int]
    latency_ms: Latency
    queue_depth: int
    gpus: dict[str, int] = Field(description="GPU label (or cpu) -> frames of this stream it published")
    producer: str | None
    settings: dict


class ServiceSummary(BaseModel):
    service_id: str
    source: str
    state: str
    producer: str | None


class ServicesResponse(BaseModel):
    services: list[ServiceSummary]


class GpuEntry(BaseModel):
    worker: str | None = None
    host: str | None = None
    index: int | None = None
    name: str | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    state: str | None = None
    fps: float | None = None
    alive: bool | None = None


class GpuInfoResponse(BaseModel):
    fleet: list[GpuEntry]
    cpu_workers: int
    api_host: str
    api_host_gpus: list[GpuEntry]


class ModelEntry(BaseModel):
    name: str
    kind: str = Field(description="bundled, stock, or weights_dir (a file an operator put in RTAI_WEIGHTS_DIR)")
    present: bool = Field(description="the file is on the API host (workers look in their own RTAI_WEIGHTS_DIR/cache)")


class ModelsResponse(BaseModel):
    models: list[ModelEntry]
    weights_dir_set: bool = Field(description="RTAI_WEIGHTS_DIR is set on the API host")
