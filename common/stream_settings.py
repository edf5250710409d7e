"""The routing part of a stream's hash (`keys.stream(id)`): one codec that the producer writes and
workers read, so neither spells the other's field names.

  device          auto: any worker; cpu: CPU workers only; cuda / cuda:N: GPU workers (GPU N only)
  gpu_devices     GPU indices allowed to take the stream (CPU workers excluded); unset: all
  load_balancing  false: the fixed map crc32(stream) % (eligible devices), instead of any worker
  pinned          true (the guide's enable_multi_gpu false): one worker at a time, results in order
  max_workers     at most N workers serve the stream at once
  gpu_memory_mb   a GPU worker takes the stream only if its GPU has this much free memory (NVML)

Stored as text: "" for unset, "0"/"1" for flags, comma-separated GPU indices.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from .config import ProducerSettings

#: The hash fields this codec owns (the rest of the stream hash is status written by others).
FIELDS = ("device", "gpu_devices", "load_balancing", "pinned", "max_workers", "gpu_memory_mb")


def _as_text(h: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in h.items()
    }


@dataclass(frozen=True, slots=True)
class Routing:
    device: str = "auto"
    gpu_devices: tuple[int, ...] | None = None
    load_balancing: bool = True
    pinned: bool = False
    max_workers: int | None = None
    gpu_memory_mb: int | None = None

    @classmethod
    def from_settings(cls, s: ProducerSettings) -> Routing:
        return cls(
            device=s.device,
            gpu_devices=tuple(s.gpu_devices) if s.gpu_devices else None,
            load_balancing=s.load_balancing,
            pinned=s.pinned,
            max_workers=s.max_workers,
            gpu_memory_mb=s.gpu_memory_mb,
        )

    def to_hash(self) -> dict[str, str]:
        return {
            "device": self.device,
            "gpu_devices": ",".join(str(g) for g in self.gpu_devices) if self.gpu_devices else "",
            "load_balancing": "1" if self.load_balancing else "0",
            "pinned": "1" if self.pinned else "0",
            "max_workers": str(self.max_workers) if self.max_workers else "",
            "gpu_memory_mb": str(self.gpu_memory_mb) if self.gpu_memory_mb else "",
        }

    @classmethod
    def from_hash(cls, h: Mapping[bytes, bytes] | Mapping[str, str]) -> Routing:
        """The routing of a stream hash as Redis returns it (bytes) or as to_hash wrote it (str).
        A hash without routing fields (a stream registered by nothing) routes to any worker."""
        t = _as_text(h)
        gpus, max_workers, memory = t.get("gpu_devices"), t.get("max_workers"), t.get("gpu_memory_mb")
        return cls(
            device=t.get("device") or "auto",
            gpu_devices=tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else None,
            load_balancing=t.get("load_balancing") != "0",
            pinned=t.get("pinned") == "1",
            max_workers=int(max_workers) if max_workers else None,
            gpu_memory_mb=int(memory) if memory else None,
        )

    @property
    def slot_limit(self) -> int | None:
        """How many workers may hold the stream at once (None: no limit)."""
        if self.pinned:
            return 1
        return self.max_workers


def stream_hash(stream: str) -> int:
    """The stable hash of a stream id behind every fixed stream -> device map (crc32 of its UTF-8)."""
    return zlib.crc32(stream.encode())
