"""The `onnx` engine: an exported ONNX model in ONNX Runtime on the CPU (the tensor path's forward)."""

from __future__ import annotations

from typing import Any

from common.errors import ModelError

from .. import threads

#: ONNX Runtime's pool threads sleep between runs instead of spinning (the worker sets OpenMP's
#: OMP_WAIT_POLICY=PASSIVE for the same reason). Measured on 2 busy cores (load 5-6), rtai-shapes
#: 320x256, 2 threads: 57 ms/frame spinning, 21 ms not; a spinning pool also takes the cores from the
#: torch ops (letterbox, NMS) that run right after each run.
ORT_NO_SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


class OnnxRunner:
    """An exported ONNX model in ONNX Runtime (CPU), with torch's intra-op thread count.

    One session serves every batch size and input shape: the export has dynamic axes, and fixing
    them (per-shape sessions with free-dimension overrides) measured no faster on these cores."""

    name = "onnx"
    fmt = "onnx"
    dynamic = True
    needs_cuda = False

    def __init__(self, path: Any, *, device: Any = None, half: bool = False):
        import onnxruntime as ort  # noqa: PLC0415
        import torch  # noqa: PLC0415
        from onnxruntime.capi import onnxruntime_pybind11_state as state  # noqa: PLC0415

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for entry in ORT_NO_SPIN:
            opts.add_session_config_entry(entry, "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except (state.Fail, state.InvalidProtobuf, state.InvalidGraph, state.NoSuchFile, state.RuntimeException) as exc:
            raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.input = self.session.get_inputs()[0].name
        self.threads = opts.intra_op_num_threads

    def __call__(self, x: Any) -> Any:
        import torch  # noqa: PLC0415

        threads.record_seen(self.threads)
        return torch.from_numpy(self.session.run(None, {self.input: x.float().cpu().numpy()})[0])
