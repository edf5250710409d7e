"""The `tensorrt` engine: an exported TensorRT engine on CUDA (the tensor path's forward)."""

from __future__ import annotations

from typing import Any

from common.errors import ModelError


class TensorRTRunner:
    """A TensorRT engine through Ultralytics' AutoBackend (which splits and zero-pads batches to the
    engine's static batch, and drops the padding's outputs)."""

    name = "tensorrt"
    fmt = "engine"
    dynamic = False
    needs_cuda = True

    def __init__(self, path: Any, *, device: Any, half: bool):
        from ultralytics.nn.autobackend import AutoBackend  # noqa: PLC0415

        try:
            self.backend = AutoBackend(str(path), device=device, fp16=half, verbose=False)
        except (RuntimeError, OSError, ValueError, AttributeError, ImportError, TypeError) as exc:
            raise ModelError(f"TensorRT cannot load {path}: {exc}") from exc

    def __call__(self, x: Any) -> Any:
        y = self.backend(x)
        return y[0] if isinstance(y, (list, tuple)) else y
