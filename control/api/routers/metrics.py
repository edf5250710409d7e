"""/metrics: Prometheus text format, written by prometheus_client."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import generate_latest

from common.shards import Fleet

from .. import metrics


def make_router(client: Fleet) -> APIRouter:
    router = APIRouter()
    registry = metrics.registry(client)

    @router.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:
        """Prometheus text format: per-stream counters and latency histograms, per-GPU gauges."""
        return PlainTextResponse(generate_latest(registry), media_type=metrics.CONTENT_TYPE)

    return router
