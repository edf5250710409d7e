"""Services: start, status, stop and the list of every service the fleet should run."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis
from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError

from common import desired, keys, ledger, models
from common.config import ApiSettings, ProducerSettings
from common.errors import RedisUnavailableError, SourceRefusedError
from common.replies import text, text_map
from common.shards import Shards
from common.sources import SourcePolicy, check_api_source, redact, redact_text
from control import status

from .. import class_names
from ..models import (
    ServicesResponse,
    ServiceSummary,
    StartRequest,
    StartResponse,
    StatusResponse,
    StopResponse,
)
from . import PREFIX


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


def _check_classes(variant: str, wanted: list[str] | None) -> None:
    """Class names the model does not have are refused (422) where the API knows its names."""
    names = class_names.known(variant)
    unknown = [c for c in wanted or () if names is not None and c not in names]
    if unknown:
        message = f"model {variant!r} has no class {unknown[0]!r}; its classes: {', '.join(names or ())}"
        loc = ["body", "analytics_settings", "classes", (wanted or []).index(unknown[0])]
        raise HTTPException(status_code=422, detail=[{"loc": loc, "msg": message, "type": "value_error"}])


def make_router(shards: Shards, limits: ApiSettings, policy: SourcePolicy) -> APIRouter:
    """`shards`: desired state on the home shard, each service's own keys on its stream's shard."""
    router = APIRouter()
    client = shards.home
    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "no such service"}}
    too_many: dict[int | str, dict[str, Any]] = {
        429: {"description": "the fleet already declares RTAI_MAX_SERVICES services"}
    }

    @router.post("/start", response_model=StartResponse, responses=too_many)
    def start(body: StartRequest) -> StartResponse:
        """Start a detection service for one stream; a producer daemon picks it up."""
        service_id = body.stream_config.stream_id or f"svc-{uuid.uuid4().hex[:10]}"
        m, p = body.model_settings, body.processing_settings
        _check_model_listed(m.variant)
        _check_classes(m.variant, body.analytics_settings.classes if body.analytics_settings else None)
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
            max_workers=body.max_workers,
            gpu_memory_mb=m.gpu_memory_mb,
            half=m.half_precision,
            analytics=body.analytics_settings,
        )
        declared = desired.get(client, service_id) is not None
        if not desired.reserve(client, service_id, limits.max_services):
            raise HTTPException(
                status_code=429,
                detail=f"the fleet already declares {limits.max_services} services (RTAI_MAX_SERVICES): stop one first",
            )
        data = shards.for_stream(service_id) if shards.sharded else None
        try:
            desired.put(client, settings, {"request": body.model_dump(), "created": time.time()}, data=data)
        except RedisUnavailableError:
            if not declared:  # its shard did not answer: nothing declared, and its place is given back
                client.srem(keys.DESIRED, service_id)
            raise
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
        if entry is None and not (
            keys.STREAM_ID_RE.match(service_id) and shards.for_stream(service_id).sismember(keys.STREAMS, service_id)
        ):
            raise HTTPException(status_code=404, detail=f"no service {service_id!r}")
        return entry or {"settings": {}}

    @router.get("/status/{service_id}", response_model=StatusResponse, responses=not_found)
    def service_status(service_id: str) -> StatusResponse:
        """State, rates, ledger, latency, queue depth and which GPUs served the service."""
        entry = _known(service_id)
        data = shards.for_stream(service_id)
        info = text_map(data.hgetall(keys.stream(service_id)))
        declared = service_id in desired.streams(client)
        if declared and info.get("state") != "error" and (why := desired.unclaimed_reason(client, service_id)):
            info["state"], info["reason"] = why.split(":", 1)[0], why  # declared, and no daemon runs it
        lat = status.latency(data, service_id)
        owner = client.get(keys.claim(service_id))
        gpus = {text(k): int(v) for k, v in data.hgetall(keys.stream_gpus(service_id)).items()}
        return StatusResponse(
            service_id=service_id,
            state=info.get("state", "pending"),
            reason=redact_text(info.get("reason", "")),
            fps_in=float(info.get("fps_in", 0) or 0),
            fps_out=lat["fps_out"],
            ledger=ledger.read(data, service_id),
            latency_ms=lat["latency_ms"],
            queue_depth=data.llen(keys.queue_key(service_id)),
            gpus=gpus,
            producer=text(owner) if owner else None,
            settings=_shown(entry["settings"]),
        )

    @router.post("/stop/{service_id}", response_model=StopResponse, responses=not_found)
    def stop(service_id: str) -> StopResponse:
        """Stop a service: its producer stops within a second; queued frames are still processed."""
        if not keys.STREAM_ID_RE.match(service_id):
            raise HTTPException(status_code=404, detail=f"no service {service_id!r}")
        if not desired.remove(client, service_id, data=shards.for_stream(service_id) if shards.sharded else None):
            raise HTTPException(status_code=404, detail=f"no service {service_id!r}")
        return StopResponse(service_id=service_id, status="stopping")

    @router.get("/services", response_model=ServicesResponse)
    def services() -> ServicesResponse:
        """Every service the fleet should run."""
        out = []
        down: set[int] = set()
        for sid in desired.streams(client):
            entry = desired.get(client, sid) or {"settings": {}}
            where = shards.index_for(sid)
            state: bytes | str | None = b"unknown" if where in down else None
            if state is None:
                try:
                    state = shards.for_stream(sid).hget(keys.stream(sid), "state")
                except (redis.ConnectionError, redis.TimeoutError):
                    if not shards.sharded:
                        raise
                    down.add(where)  # its shard does not answer: its services show `unknown`, once a shard
                    state = b"unknown"
            owner = client.get(keys.claim(sid))
            out.append(
                ServiceSummary(
                    service_id=sid,
                    source=redact(str(entry["settings"].get("source", ""))),
                    state=text(state) if state else "pending",
                    producer=text(owner) if owner else None,
                )
            )
        return ServicesResponse(services=out)

    return router
