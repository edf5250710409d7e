"""GPU discovery and live stats through NVML (pynvml); an empty answer where there is none."""

from __future__ import annotations

import logging
from typing import Any

from .config import visible_cuda_devices

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


def physical_id(device: str) -> str | None:
    """What names the GPU behind torch `device` outside this process: its entry in CUDA_VISIBLE_DEVICES
    (an NVML index such as '2', or a UUID such as 'GPU-5f…'), or the ordinal when that is unset.
    None for the CPU, or for an ordinal past the visible list (no such device in this process).
    The one mapping: worker labels, per-GPU stats and the guide's API all use it."""
    if not device.startswith("cuda"):
        return None
    ordinal = int(device.partition(":")[2] or 0)
    visible = visible_cuda_devices()
    if visible is None:
        return str(ordinal)
    return visible[ordinal] if ordinal < len(visible) else None


def nvml_index(device: str) -> int | None:
    """The NVML index of the GPU behind torch `device` (physical_id; a UUID resolved through NVML);
    None for the CPU or when NVML cannot say."""
    ident = physical_id(device)
    if ident is None:
        return None
    if ident.isdigit():
        return int(ident)
    if not _init():
        return None
    handle = _safe(pynvml.nvmlDeviceGetHandleByUUID, ident)
    index = _safe(pynvml.nvmlDeviceGetIndex, handle) if handle is not None else None
    return int(index) if index is not None else None


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


def driver_version() -> str | None:
    """The NVIDIA driver version, e.g. '550.54.15'; None without NVML."""
    if not _init():
        return None
    version = _safe(pynvml.nvmlSystemGetDriverVersion)
    return version.decode() if isinstance(version, bytes) else version


def pcie_link(index: int) -> dict[str, Any]:
    """Current and maximum PCIe generation and lane width of GPU `index`; empty without NVML."""
    if not _init():
        return {}
    handle = _safe(pynvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return {}
    return {
        "pcie_gen": _safe(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        "pcie_width": _safe(pynvml.nvmlDeviceGetCurrPcieLinkWidth, handle),
        "pcie_max_gen": _safe(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        "pcie_max_width": _safe(pynvml.nvmlDeviceGetMaxPcieLinkWidth, handle),
    }


def nvlink_active(index: int) -> int | None:
    """How many NVLink links of GPU `index` are up; None where NVML or NVLink is not there."""
    if not _init():
        return None
    handle = _safe(pynvml.nvmlDeviceGetHandleByIndex, index)
    if handle is None:
        return None
    states = [_safe(pynvml.nvmlDeviceGetNvLinkState, handle, link) for link in range(pynvml.NVML_NVLINK_MAX_LINKS)]
    known = [s for s in states if s is not None]
    return sum(s == pynvml.NVML_FEATURE_ENABLED for s in known) if known else None


#: NVML's common-ancestor levels under the names `nvidia-smi topo -m` prints.
_TOPOLOGY = {0: "SELF", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}


def topology(a: int, b: int) -> str | None:
    """How GPUs `a` and `b` are connected (PIX, PXB, PHB, NODE, SYS as in `nvidia-smi topo -m`)."""
    if not _init():
        return None
    ha = _safe(pynvml.nvmlDeviceGetHandleByIndex, a)
    hb = _safe(pynvml.nvmlDeviceGetHandleByIndex, b)
    if ha is None or hb is None:
        return None
    level = _safe(pynvml.nvmlDeviceGetTopologyCommonAncestor, ha, hb)
    return None if level is None else _TOPOLOGY.get(int(level), str(level))
