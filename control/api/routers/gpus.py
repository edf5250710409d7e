"""GPUs: every GPU in the fleet (from worker heartbeats) and this API host's own."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from common import gpu
from common.config import host_name
from common.shards import Shards
from control import status

from ..models import GpuEntry, GpuInfoResponse


def make_router(client: redis.Redis | Shards) -> APIRouter:
    router = APIRouter()

    @router.get("/gpu-info", response_model=GpuInfoResponse)
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

    return router
