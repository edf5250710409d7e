"""/metrics: Prometheus text format."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from .. import analytics_metrics, metrics


def make_router(client: redis.Redis) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        """Prometheus text format: per-stream counters and latency histograms, per-GPU gauges."""
        return metrics.render(client) + analytics_metrics.render(client)

    return router
