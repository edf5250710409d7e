"""Typed, closed settings, built once from `RTAI_*` environment variables and CLI flags.

This is the only module that reads or writes `os.environ`. Each setting `foo` is read from
`RTAI_FOO`; a CLI flag given explicitly wins over the environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .analytics_settings import AnalyticsSettings
from .errors import ConfigError, ModelError
from .model_names import check_name

ENV_PREFIX = "RTAI_"

#: Local Redis on the default port: what `docker compose` and a plain `redis-server` give.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The project's own model (a YOLO11n trained on synthetic shapes): runs with no download.
DEFAULT_MODEL = "rtai-shapes"
#: 320 px keeps CPU inference near 12 ms a frame and still finds 20 px objects.
DEFAULT_IMGSZ = 320
#: Enough frames per job to amortise Redis and RQ costs, few enough to keep latency low.
DEFAULT_BATCH_SIZE = 4
#: Sampling rate per stream: a camera's own rate. With credit-based flow and fresh batches a
#: stream takes only what the fleet drains, so a higher rate costs no queueing, and a worker takes a
#: frame at most one tick old (measured with fleet_vs_stream, issue 10: at 1 stream 1.2-1.5x the
#: results/s of 10 fps and a lower p50 at 320 and 640; at 4 streams on 2 cores, mixed).
DEFAULT_MAX_FPS = 30.0
#: A batch waiting longer than this is dropped at the producer instead of piling up latency.
DEFAULT_QUEUE_BOUND = 64
#: A batch leaves as soon as it has a frame: waiting to fill it only adds latency (issue 10).
DEFAULT_MAX_BATCH_WAIT_MS = 0.0
#: How a producer decodes video (ProducerSettings.decode says what each does).
DecodeMode = Literal["auto-cpu", "cpu", "pyav", "keyframes", "vaapi", "nvdec", "auto"]
DECODES: tuple[str, ...] = get_args(DecodeMode)
DEFAULT_DECODE: DecodeMode = "auto-cpu"
#: Frames older than this at dequeue are dropped and counted: stale alerts are worse than none.
DEFAULT_MAX_FRAME_AGE_MS = 10_000
#: Heartbeat every 0.25 s with a 1.5 s lease (six missed beats): a lost worker's job is requeued
#: by another worker's reaper within lease + one heartbeat, under 2 s.
DEFAULT_HEARTBEAT_S = 0.25
DEFAULT_LEASE_S = 1.5
#: Services the REST API lets callers declare: far above one host's cameras, low enough that a
#: script looping on POST /start cannot fill Redis.
DEFAULT_MAX_SERVICES = 256
#: The largest body the REST API reads: a start request with 64 zones of 256 points is ~60 KB, so
#: 1 MB leaves room and still refuses a memory-bloating upload before it is read.
DEFAULT_API_MAX_BODY_BYTES = 1_048_576
#: A connection whose request headers (or body) are not in after this long is closed (slowloris).
DEFAULT_API_HEADER_TIMEOUT_S = 10.0
#: Open connections the API accepts at once (live pages hold one each); more are closed at accept.
DEFAULT_API_MAX_CONNECTIONS = 2048
#: A process that never reached Redis gives up after this long (a wrong URL should fail fast; a
#: running fleet that loses Redis keeps retrying). Compose starts workers once Redis is healthy.
DEFAULT_REDIS_START_TIMEOUT_S = 5.0
#: How often a process re-measures its clock's offset from Redis' clock (TIME).
DEFAULT_CLOCK_CHECK_S = 30.0

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
#: `--source demo` means the clip that ships with the package (made by devkit/synth.py).
DEMO_SOURCE = "demo"
DEMO_CLIP = ASSETS_DIR / "demo.mp4"


def resolve_source(source: str) -> str:
    return str(DEMO_CLIP) if source == DEMO_SOURCE else source


Device = str
GpuIndex = Annotated[int, Field(ge=0, le=1023)]
FaultPoint = Literal["after_dequeue", "during_inference", "after_publish"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FleetSettings(_Settings):
    #: The fleet's Redis: redis://[:password@]host:port/db, or rediss:// for TLS (`rtai up` starts a
    #: private one when unset).
    redis_url: str = DEFAULT_REDIS_URL
    #: A process that cannot reach Redis at start gives up after this many seconds (exit 3).
    redis_start_timeout_s: float = Field(DEFAULT_REDIS_START_TIMEOUT_S, gt=0, le=3600)


class ProducerSettings(_Settings):
    redis_url: str = DEFAULT_REDIS_URL
    stream: str
    source: str
    max_fps: float = Field(DEFAULT_MAX_FPS, gt=0, le=240)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=64)
    imgsz: int = Field(DEFAULT_IMGSZ, ge=32, le=4096)
    model: str = DEFAULT_MODEL
    conf: float = Field(0.25, ge=0.0, le=1.0)
    encoding: Literal["jpeg", "raw"] = "jpeg"
    jpeg_quality: int = Field(90, ge=10, le=100)
    queue_bound: int = Field(DEFAULT_QUEUE_BOUND, ge=1)
    #: A partly filled batch leaves this long after its first frame was sampled (0: at once).
    max_batch_wait_ms: float = Field(DEFAULT_MAX_BATCH_WAIT_MS, ge=0)
    #: Credit-based flow: sample a new batch only while the stream's queue holds fewer batches than
    #: workers take it (see producer/flow.py); off: batches queue up to queue_bound.
    credit_flow: bool = True
    #: While the stream has no room, the batch that waits takes each tick's newest frame in place of
    #: its own (producer/enqueue.py: the batch a worker takes next is at most one tick old).
    fresh_batches: bool = True
    loop: bool = False
    max_frames: int | None = Field(None, ge=1)
    #: Seconds a camera may take to open.
    open_timeout_s: float = Field(5.0, gt=0)
    #: A source that sends no frame for this many seconds is stalled, and reopened.
    stall_timeout_s: float = Field(5.0, gt=0)
    #: Reconnect backoff: the first wait, doubling up to the next setting.
    reconnect_min_s: float = Field(0.5, gt=0)
    #: Reconnect backoff: the longest wait.
    reconnect_max_s: float = Field(10.0, gt=0)
    max_reconnects: int | None = Field(None, ge=0)
    #: Video decode: auto-cpu (the default: the cheaper CPU decoder for the camera's size, PyAV from
    #: 1280x720 up, OpenCV below), cpu (OpenCV's FFmpeg backend: full-size conversion, then a
    #: resize), pyav (PyAV: YUV straight to the size sent, the JPEG from the planes), keyframes
    #: (PyAV, keyframes only: for sampling at or below the keyframe rate), vaapi (PyAV on a VAAPI
    #: device where FFmpeg has one, else PyAV on the CPU, with a warning), nvdec (FFmpeg's CUVID
    #: through OpenCV; an error where absent), auto (NVDEC where it works, else as auto-cpu).
    decode: DecodeMode = DEFAULT_DECODE
    # Routing (which workers take the stream; see worker/routing.py)
    #: Which workers may take the stream: auto (any), cpu, cuda (any GPU) or cuda:N.
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    #: GPU indices whose workers may take the stream (none: every GPU).
    gpu_devices: list[GpuIndex] | None = Field(None, max_length=256)
    #: Any allowed worker takes the deepest queue (on); off: the fixed map stream % GPUs.
    load_balancing: bool = True
    #: One worker at a time takes the stream (results in order, as tracking wants).
    pinned: bool = False
    #: The most workers taking the stream at once (none: any number).
    max_workers: int | None = Field(None, ge=1)
    #: Free GPU memory (MB, NVML) a GPU worker needs to take the stream; CPU workers ignore it.
    gpu_memory_mb: int | None = Field(None, ge=1, le=16_777_216)
    #: FP16 for this stream on CUDA workers; None leaves it to the worker (on by default on CUDA).
    half: bool | None = None
    #: Classes, zones, lines, tracking and snapshots of the stream (common/analytics_settings.py).
    analytics: AnalyticsSettings | None = None

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        """A model name, never a path (common/model_names.py: the rule producers, API and workers share)."""
        try:
            return check_name(value)
        except ModelError as exc:
            raise ValueError(str(exc)) from exc


class WorkerSettings(_Settings):
    redis_url: str = DEFAULT_REDIS_URL
    device: Device = "cpu"
    name: str | None = None
    threads: int | None = Field(None, ge=1)
    half: bool | None = None
    max_frame_age_ms: int = Field(DEFAULT_MAX_FRAME_AGE_MS, ge=1)
    #: Seconds between a worker's heartbeats (lease renewals and stats).
    heartbeat_s: float = Field(DEFAULT_HEARTBEAT_S, gt=0)
    #: A worker that has not renewed its lease this long is dead: its jobs are requeued.
    lease_s: float = Field(DEFAULT_LEASE_S, gt=0)
    fault_point: FaultPoint | None = None
    #: Chaos tests: "<stream>#<batch>" makes every worker SIGKILL itself each time it is about to run
    #: inference on that batch (a batch that crashes whoever runs it).
    fault_batch: str | None = None
    detector: Literal["yolo", "noop", "sleep"] = "yolo"
    #: Inference engine for `yolo` (worker/engines/): auto = per imgsz, TensorRT on CUDA / ONNX Runtime
    #: on the CPU where a fitting exported engine is cached, else Ultralytics' predictor.
    engine: Literal["auto", "torch", "tensor", "onnx", "tensorrt", "ultralytics"] = "auto"
    #: The batch an exported engine must have been built for (`rtai models export --batch`).
    engine_batch: int = Field(8, ge=1, le=256)
    sleep_ms: float = Field(10.0, ge=0)
    max_jobs: int | None = Field(None, ge=1)
    #: Dynamic batching: with a backlog, a worker takes more queued jobs (across its streams) along
    #: with the one it dequeues, up to this many frames, and runs them in one detector call.
    max_batch_frames: int = Field(8, ge=1, le=256)
    #: Prefetch (worker/prefetch.py): a thread takes and decodes the next group of jobs while this
    #: one is in hand. `settle`: from the end of the detector call (overlaps the settle and RQ's
    #: records); `detect`: from its start (overlaps the model too; the next group's frames are then
    #: a detector call older when they run); `off`; `auto`: `settle` on a CUDA device, `off` on the
    #: CPU, where the model already keeps every core busy (measured: no gain, BENCHMARKS.md).
    prefetch: Literal["auto", "off", "settle", "detect"] = "auto"

    @property
    def prefetch_stage(self) -> str:
        """Where the prefetch starts ("settle", "detect"), or "off"."""
        if self.prefetch != "auto":
            return self.prefetch
        return "settle" if self.device.startswith("cuda") else "off"

    burst: bool = False
    #: A supervised child may die this often per minute before it is left down and reported.
    restart_budget: int = Field(5, ge=0)


class ApiSettings(_Settings):
    """The REST API's limits: see common/sources.py for what the URL rules mean."""

    #: Local files a request may name must be under this directory (none: only `demo`).
    media_root: Path | None = None
    #: Non-global hosts a request may name: `all`/`1`, `private`, or a comma list of CIDRs/hosts.
    api_allow_private: str = ""
    #: Services callers may declare; a `start` past it gets a 429.
    max_services: int = Field(DEFAULT_MAX_SERVICES, ge=1)
    #: A request body over this many bytes gets a 413 before it is read to the end.
    api_max_body_bytes: int = Field(DEFAULT_API_MAX_BODY_BYTES, ge=1024)
    #: A client must send its request headers within this many seconds (slowloris).
    api_header_timeout_s: float = Field(DEFAULT_API_HEADER_TIMEOUT_S, gt=0, le=3600)
    #: Open connections the API holds at once; past it a new one evicts the connection that has waited
    #: longest for its headers, or is closed when every connection is inside a request.
    api_max_connections: int = Field(DEFAULT_API_MAX_CONNECTIONS, ge=1)
    #: Extra Host names the API answers (comma list; `*` turns the Host check off).
    api_allowed_hosts: str = ""
    #: Serve /docs and /openapi.json (off: they are an extra surface on the page's origin).
    api_docs: bool = False


S = TypeVar("S", bound=_Settings)


def build(cls: type[S], **overrides: object) -> S:
    """Build settings of `cls` from RTAI_* variables, then flags that are not None."""
    data: dict[str, object] = {}
    for name in cls.model_fields:
        value = os.environ.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            data[name] = value
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or cls.__name__}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc


def env_value(name: str) -> str | None:
    """The RTAI_<NAME> variable, or None when unset or empty."""
    return os.environ.get(ENV_PREFIX + name.upper()) or None


def redis_url(override: str | None = None) -> str:
    """--redis-url, else RTAI_REDIS_URL, else the private Redis of a running `rtai up`, else the default."""
    if override is None and explicit_redis_url() is None and (running := up_redis_url()) is not None:
        return running
    return build(FleetSettings, redis_url=override).redis_url


def run_file() -> Path:
    """Where `rtai up` says which private Redis it runs: $XDG_RUNTIME_DIR/rtai, else ~/.local/state/rtai."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "rtai" if base else Path.home() / ".local" / "state" / "rtai"
    return root / "redis.url"


def up_redis_url() -> str | None:
    """The URL in the run file while the `rtai up` that wrote it lives (a killed one leaves a stale file)."""
    try:
        url, pid = run_file().read_text().split()[:2]
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return None
    return url


def write_run_file(url: str) -> Path:
    path = run_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{url}\n{os.getpid()}\n")
    path.chmod(0o600)
    return path


def remove_run_file() -> None:
    """Remove the run file if this process wrote it."""
    try:
        if run_file().read_text().split()[1] == str(os.getpid()):
            run_file().unlink()
    except (OSError, IndexError):
        pass


def redis_start_timeout_s() -> float:
    """RTAI_REDIS_START_TIMEOUT_S: how long a starting process waits for Redis to answer."""
    return build(FleetSettings).redis_start_timeout_s


def clock_skew_test_s() -> float:
    """RTAI_CLOCK_SKEW_TEST_S, tests only: pretend this host's clock runs this many seconds ahead.
    (libfaketime 0.9.10 cannot skew a threaded Python 3.11: its timed waits hang or fail.)"""
    value = os.environ.get(ENV_PREFIX + "CLOCK_SKEW_TEST_S")
    try:
        return float(value) if value else 0.0
    except ValueError as exc:
        raise ConfigError(f"RTAI_CLOCK_SKEW_TEST_S={value!r} is not a number") from exc


def explicit_redis_url() -> str | None:
    """RTAI_REDIS_URL when the user set it, else None (`rtai up` then runs a private Redis)."""
    return os.environ.get(ENV_PREFIX + "REDIS_URL") or None


def host_name() -> str:
    return socket.gethostname()


def visible_cuda_devices() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list, or None when unset (all devices visible)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "-1"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours plus `extra` (e.g. CUDA_VISIBLE_DEVICES)."""
    env = dict(os.environ)
    env.update(extra)
    return env


def apply_capture_options() -> None:
    """Make OpenCV's FFmpeg backend use RTSP over TCP (the decode threads are a capture parameter:
    producer/source.py; a `threads` option here would never reach the decoder)."""
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


def apply_worker_thread_env() -> None:
    """OpenMP threads that sleep when idle instead of spinning (read once, when torch loads): on a
    host whose cores are busy (producers, other workers), spinning threads made a 2-thread predict
    10-20x slower than a 1-thread one (1.3 s against 0.1 s); passive, it is the faster (70 ms)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextlib.contextmanager
def extra_capture_option(option: str) -> Iterator[None]:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS with `option` (e.g. `video_codec;h264_cuvid`) added while a
    capture opens (OpenCV reads it at open); the caller serialises opens that use this."""
    apply_capture_options()
    before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join(p for p in (before, option) if p)
    try:
        yield
    finally:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = before


def apply_offline_model_env() -> None:
    """Keep Ultralytics from phoning home (it still loads local weights), and turn its restricted
    (`weights_only`) checkpoint loading on for the process (read when Ultralytics is imported)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"


def _env_flag(name: str) -> bool:
    return (os.environ.get(ENV_PREFIX + name) or "").strip().lower() in ("1", "true", "yes", "on")


def weights_dir() -> Path | None:
    """RTAI_WEIGHTS_DIR: the one directory where an operator puts model files (by name)."""
    value = os.environ.get(ENV_PREFIX + "WEIGHTS_DIR")
    return Path(value) if value else None


def trust_weights_dir() -> bool:
    """RTAI_TRUST_WEIGHTS_DIR=1: files in RTAI_WEIGHTS_DIR may need a full (code-running) unpickle."""
    return _env_flag("TRUST_WEIGHTS_DIR")


def allow_downloads() -> bool:
    """RTAI_ALLOW_DOWNLOADS=1: a worker may download a missing stock model itself."""
    return _env_flag("ALLOW_DOWNLOADS")


def ultralytics_weights_dir() -> Path | None:
    """Ultralytics' weights cache, read from its settings file without importing it (the API host
    has no torch): YOLO_CONFIG_DIR or ~/.config/Ultralytics, key `weights_dir`. None when unknown."""
    base = os.environ.get("YOLO_CONFIG_DIR")
    root = Path(base).expanduser() if base else Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    root = root / "Ultralytics"
    try:
        value = json.loads((root / "settings.json").read_text()).get("weights_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(value) if isinstance(value, str) and value else None


def setup_logging(verbose: int) -> None:
    """Every rtai process logs to stderr: warnings by default, -v info, -vv debug."""
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def role_command(role: str, *args: str) -> list[str]:
    """The command line that runs a role's package (`control`, `producer`, `worker`) as a process."""
    return [sys.executable, "-m", role, *args]
