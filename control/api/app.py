"""The control plane: REST on port 2000 (FastAPI), the older multi-GPU guide's surface.

Stateless: `start` writes the service as desired state to Redis, a producer daemon claims and
runs it; every read comes from Redis. Optional bearer token (RTAI_API_TOKEN / --token).
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from common import desired, gpu, keys, ledger, models
from common.config import ApiSettings, ProducerSettings, build, host_name, weights_dir
from common.errors import SourceRefusedError
from common.redis_client import connect
from common.sources import SourcePolicy, check_api_source, redact, redact_text
from control import status

from . import metrics
from .models import (
    GpuEntry,
    GpuInfoResponse,
    ModelEntry,
    ModelsResponse,
    ServicesResponse,
    ServiceSummary,
    StartRequest,
    StartResponse,
    StatusResponse,
    StopResponse,
)

PREFIX = "/api/v1/realtime-ai"


def _shown(settings: dict) -> dict:
    """A service's settings as the API shows them: the source without its password."""
    return {**settings, "source": redact(str(settings["source"]))} if "source" in settings else settings


def _check_model_listed(variant: str) -> None:
    """An operator's file name must be listed in RTAI_WEIGHTS_DIR (as GET /models shows it): 422 if not.
    Bundled and stock names pass; a worker that lacks a stock file puts the stream in `error`."""
    if models.is_custom(variant) and variant not in models.weights_dir_files():
        message = f"model {variant!r} is not in RTAI_WEIGHTS_DIR on the API host; GET {PREFIX}/models lists the names"
        loc = ["body", "model_settings", "variant"]
        raise HTTPException(status_code=422, detail=[{"loc": loc, "msg": message, "type": "value_error"}])


def create_app(redis_url: str, *, token: str | None = None, limits: ApiSettings | None = None) -> FastAPI:
    app = FastAPI(
        title="realtime-ai control plane",
        version="1.0",
        description="Start, stop and watch detection services on the realtime-ai fleet.",
    )
    client = connect(redis_url, check=False)
    limits = limits or build(ApiSettings)
    policy = SourcePolicy.parse(limits.api_allow_private, limits.media_root)

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        expected = f"Bearer {token}".encode()
        # Header values arrive as latin-1 text; compare bytes (compare_digest refuses non-ASCII str).
        if authorization is None or not secrets.compare_digest(authorization.encode("latin-1"), expected):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"Redis unreachable: {exc}"})

    guarded = [Depends(auth)]
    not_found = {404: {"description": "no such service"}}
    too_many = {429: {"description": "the fleet already declares RTAI_MAX_SERVICES services"}}

    @app.post(f"{PREFIX}/start", response_model=StartResponse, dependencies=guarded, responses=too_many)
    def start(body: StartRequest) -> StartResponse:
        """Start a detection service for one stream; a producer daemon picks it up."""
        service_id = body.stream_config.stream_id or f"svc-{uuid.uuid4().hex[:10]}"
        m, p = body.model_settings, body.processing_settings
        _check_model_listed(m.variant)
        source = _allowed_source(body.stream_config.url, body.stream_config.protocol)
        settings = ProducerSettings(
            stream=service_id,
            source=source,
            max_fps=p.max_fps,
            batch_size=p.batch_size,
            imgsz=m.imgsz,
            model=m.variant,
            conf=m.confidence_threshold,
            loop=body.stream_config.loop,
            device=m.device,
            gpu_devices=m.gpu_devices,
            load_balancing=m.load_balancing,
            pinned=not m.enable_multi_gpu,
            max_workers=m.max_workers,
            half=m.half_precision,
        )
        if not desired.reserve(client, service_id, limits.max_services):
            raise HTTPException(
                status_code=429,
                detail=f"the fleet already declares {limits.max_services} services (RTAI_MAX_SERVICES): stop one first",
            )
        desired.put(client, settings, {"request": body.model_dump(), "created": time.time()})
        return StartResponse(
            service_id=service_id,
            stream_id=service_id,
            status="starting",
            results_channel=keys.results_channel(service_id),
        )

    def _allowed_source(url: str, protocol: str) -> str:
        try:
            return check_api_source(url, protocol, policy)
        except SourceRefusedError as exc:
            loc = ("body", "stream_config", "url")
            raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": str(exc), "input": None}]) from exc

    def _known(service_id: str) -> dict:
        entry = desired.get(client, service_id) if keys.STREAM_ID_RE.match(service_id) else None
        if entry is None and not (keys.STREAM_ID_RE.match(service_id) and client.sismember(keys.STREAMS, service_id)):
            raise HTTPException(status_code=404, detail=f"no service {service_id!r}")
        return entry or {"settings": {}}

    @app.get(
        f"{PREFIX}/status/{{service_id}}", response_model=StatusResponse, dependencies=guarded, responses=not_found
    )
    def service_status(service_id: str) -> StatusResponse:
        """State, rates, ledger, latency, queue depth and which GPUs served the service."""
        entry = _known(service_id)
        info = {k.decode(): v.decode(errors="replace") for k, v in client.hgetall(keys.stream(service_id)).items()}
        lat = status.latency(client, service_id)
        owner = client.get(keys.claim(service_id))
        gpus = {k.decode(): int(v) for k, v in client.hgetall(keys.stream_gpus(service_id)).items()}
        return StatusResponse(
            service_id=service_id,
            state=info.get("state", "pending"),
            reason=redact_text(info.get("reason", "")),
            fps_in=float(info.get("fps_in", 0) or 0),
            fps_out=lat["fps_out"],
            ledger=ledger.read(client, service_id),
            latency_ms=lat["latency_ms"],
            queue_depth=client.llen(keys.queue_key(service_id)),
            gpus=gpus,
            producer=owner.decode() if owner else None,
            settings=_shown(entry["settings"]),
        )

    @app.post(f"{PREFIX}/stop/{{service_id}}", response_model=StopResponse, dependencies=guarded, responses=not_found)
    def stop(service_id: str) -> StopResponse:
        """Stop a service: its producer stops within a second; queued frames are still processed."""
        if not keys.STREAM_ID_RE.match(service_id) or not desired.remove(client, service_id):
            raise HTTPException(status_code=404, detail=f"no service {service_id!r}")
        return StopResponse(service_id=service_id, status="stopping")

    @app.get(f"{PREFIX}/services", response_model=ServicesResponse, dependencies=guarded)
    def services() -> ServicesResponse:
        """Every service the fleet should run."""
        out = []
        for sid in desired.streams(client):
            entry = desired.get(client, sid) or {"settings": {}}
            state = client.hget(keys.stream(sid), "state")
            owner = client.get(keys.claim(sid))
            out.append(
                ServiceSummary(
                    service_id=sid,
                    source=redact(str(entry["settings"].get("source", ""))),
                    state=state.decode() if state else "pending",
                    producer=owner.decode() if owner else None,
                )
            )
        return ServicesResponse(services=out)

    @app.get(f"{PREFIX}/gpu-info", response_model=GpuInfoResponse, dependencies=guarded)
    def gpu_info() -> GpuInfoResponse:
        """Every GPU in the fleet (from worker heartbeats) and this API host's own GPUs."""
        report = status.collect(client)
        fleet, cpu_workers = [], 0
        for name, w in report["workers"].items():
            if w.get("gpu", "cpu") == "cpu":
                cpu_workers += int(w["alive"])
                continue
            fleet.append(
                GpuEntry(
                    worker=name,
                    host=w.get("host"),
                    index=int(w["gpu"]),
                    name=w.get("gpu_name"),
                    memory_used_mb=w.get("gpu_memory_used_mb"),
                    memory_total_mb=w.get("gpu_memory_total_mb"),
                    utilization_pct=w.get("gpu_utilization_pct"),
                    temperature_c=w.get("gpu_temperature_c"),
                    power_w=w.get("gpu_power_w"),
                    state=w.get("state"),
                    fps=w.get("fps"),
                    alive=w["alive"],
                )
            )
        local = [GpuEntry(**{k: v for k, v in g.items() if k in GpuEntry.model_fields}) for g in gpu.all_stats()]
        return GpuInfoResponse(fleet=fleet, cpu_workers=cpu_workers, api_host=host_name(), api_host_gpus=local)

    @app.get(f"{PREFIX}/models", response_model=ModelsResponse, dependencies=guarded)
    def list_models() -> ModelsResponse:
        """Model names a service may use: the bundled model, stock YOLO11 (and whether this host has
        the file), and the files in RTAI_WEIGHTS_DIR."""
        entries = [ModelEntry(name=a.name, kind=a.kind, present=a.present) for a in models.available()]
        return ModelsResponse(models=entries, weights_dir_set=weights_dir() is not None)

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guarded)
    def prometheus() -> str:
        """Prometheus text format: per-stream counters and latency histograms, per-GPU gauges."""
        return metrics.render(client)

    return app
