"""GPU discovery and live stats through NVML (pynvml); an empty answer where there is none."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

try:
    import pynvml
except ImportError:  # nvidia-ml-py is a dependency, but a slim image may lack it
    pynvml = None

_initialised: bool | None = None


def _init() -> bool:
    global _initialised
    if _initialised is None:
        if pynvml is None:
            _initialised = False
        else:
            try:
                pynvml.nvmlInit()
                _initialised = True
            except pynvml.NVMLError as exc:
                log.debug("NVML unavailable: %s", exc)
                _initialised = False
    return _initialised


def count() -> int:
    if not _init():
        return 0
    try:
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def stats(index: int) -> dict[str, Any]:
    """Name, memory, utilisation, temperature and power of GPU `index` (NVML numbering)."""
    if not _init():
        return {}
    handle = _safe(pynvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return {}
    mem = _safe(pynvml.nvmlDeviceGetMemoryInfo, handle)
    util = _safe(pynvml.nvmlDeviceGetUtilizationRates, handle)
    power = _safe(pynvml.nvmlDeviceGetPowerUsage, handle)
    limit = _safe(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    cc = _safe(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    name = _safe(pynvml.nvmlDeviceGetName, handle)
    return {
        "index": index,
        "name": name.decode() if isinstance(name, bytes) else name,
        "memory_used_mb": round(mem.used / 2**20) if mem else None,
        "memory_total_mb": round(mem.total / 2**20) if mem else None,
        "utilization_pct": util.gpu if util else None,
        "temperature_c": _safe(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        "power_w": round(power / 1000, 1) if power is not None else None,
        "power_limit_w": round(limit / 1000, 1) if limit is not None else None,
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
    }


def all_stats() -> list[dict[str, Any]]:
    return [stats(i) for i in range(count())]
