"""Inference engines: one backend per module, chosen by name through `build`.

| engine | module | runs |
|---|---|---|
| `ultralytics` | predictor.py | Ultralytics' own predictor: the reference the others match |
| `torch` (alias `tensor`) | tensor.py | the tensor path on the PyTorch module (FP16 on CUDA) |
| `onnx` | onnxrt.py | the tensor path with an exported ONNX model in ONNX Runtime (CPU) |
| `tensorrt` | trt.py | the tensor path with an exported TensorRT engine (CUDA) |
| `auto` (default) | | per imgsz: the exported engine of this device (below), else the predictor |

`auto` runs, per imgsz, the exported engine of the device's kind (TensorRT on CUDA, ONNX on the CPU)
where an intact one for this model, imgsz, batch and device is cached (`rtai models export`).

Measured on 2 CPU cores (benchmarks/engines.py, imgsz 320/640, batch 1/4/8), ONNX Runtime takes the
least CPU time a frame in every cell (1.02-2.4x less than Ultralytics' predictor), and the tensor path
on the PyTorch module is no faster than Ultralytics' predictor: so `auto` falls back to the
predictor. A named exported engine (`onnx`, `tensorrt`) that is missing, stale or corrupt for an
imgsz falls back to the PyTorch module, logged once: never a crash.

Every engine takes decoded BGR frames: the worker decodes JPEG on its CPU pool (worker/decode.py);
with prefetch (the default on CUDA) the next group's decode runs while the model runs this one.
The fleet worker (worker/runtime.py) and the guide's `MultiGPUYOLOv11Detector`
(realtime_ai/detector.py) both build their detectors here. The no-op and sleep detectors of the
benchmarks are in bench.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .. import engine_cache, models
from .base import Boxes, Detector, empty_boxes
from .bench import NoopDetector, SleepDetector
from .predictor import YoloDetector
from .tensor import RUNNERS, TensorDetector

log = logging.getLogger(__name__)

#: Every name `--engine` / RTAI_ENGINE accepts.
ENGINES = ("auto", "torch", "tensor", *RUNNERS, YoloDetector.name)

__all__ = [
    "ENGINES",
    "Boxes",
    "Detector",
    "NoopDetector",
    "SleepDetector",
    "TensorDetector",
    "YoloDetector",
    "build",
    "empty_boxes",
]


def build(
    variant: str,
    *,
    device: str,
    half: bool | None,
    engine: str = "auto",
    engine_batch: int = 8,
    warmup_imgsz: int = 320,
    allow_path: bool = False,
) -> Detector:
    """The detector `engine` names for this device (see the table above). `allow_path`: the model
    may be a weights file the program itself names (the guide's API), still loaded safely."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")

    def predictor() -> YoloDetector:
        return YoloDetector(variant, device=device, half=half, warmup_imgsz=warmup_imgsz, allow_path=allow_path)

    def tensor(backend: str, fallback: str = "torch") -> TensorDetector:
        return TensorDetector(
            variant,
            device=device,
            half=half,
            backend=backend,
            engine_batch=engine_batch,
            warmup_imgsz=warmup_imgsz,
            fallback=fallback,
            allow_path=allow_path,
        )

    if engine == YoloDetector.name:
        return predictor()
    cuda = device.startswith("cuda")
    if engine == "auto":
        backend = next(name for name, runner in RUNNERS.items() if runner.needs_cuda == cuda)
        if not exported(variant, RUNNERS[backend].fmt):
            log.info(
                "model %s on %s: no %s engine exported in %s (rtai models export %s --format %s); "
                "using Ultralytics' predictor",
                variant,
                device,
                backend,
                engine_cache.cache_dir(),
                variant,
                RUNNERS[backend].fmt,
            )
            return predictor()
        return tensor(backend, fallback=YoloDetector.name)
    backend = "torch" if engine in ("torch", "tensor") else engine
    if backend in RUNNERS and RUNNERS[backend].needs_cuda and not cuda:
        log.warning("engine %s needs CUDA; %s on %s uses the PyTorch weights", backend, variant, device)
        backend = "torch"
    return tensor(backend)


def exported(variant: str, fmt: str) -> bool:
    """Whether the engine cache lists any file of this model in format `fmt` (its key is checked at use)."""
    wanted = Path(models.canonical(variant)).name
    for entry in engine_cache.read_manifest().values():
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, dict) and key.get("format") == fmt:
            if Path(models.canonical(str(key.get("model")))).name == wanted:
                return True
    return False
