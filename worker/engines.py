"""The tensor path: JPEG bytes (or decoded frames) to boxes with every step a batched tensor op.

JPEG bytes -> `torchvision.io.decode_jpeg` (nvJPEG on CUDA, libjpeg-turbo on CPU) -> one letterbox
and normalisation for the batch -> the model's forward (PyTorch nn.Module, FP16 on CUDA; or ONNX
Runtime; or a TensorRT engine) -> NMS on the same device -> boxes, scaled to the decoded frame, to the
host. On CUDA, frames given as arrays are copied from pinned memory on a side stream, so one batch's
copy overlaps the previous batch's compute when the worker prefetches. The letterbox follows
Ultralytics' (`LetterBox`: same scale, rounding, grey 114 padding, minimal stride-aligned rectangle
for a batch of equal shapes on a dynamic-shape backend), so the boxes match its predictor's, which
stays the reference and the fallback (`--engine ultralytics`).

Engine choice (`--engine`, RTAI_ENGINE): `ultralytics` (its predictor), `torch`/`tensor` (this path
with the PyTorch module), `onnx` (ONNX Runtime, CPU), `tensorrt` (CUDA), `auto`: per imgsz, the
exported engine (TensorRT on CUDA, ONNX Runtime on CPU) where an intact one for this
model/imgsz/batch/device is cached, else Ultralytics' predictor. Measured on 2 CPU cores
(benchmarks/engines.py, imgsz 320/640, batch 1/4/8), ONNX Runtime takes the least CPU time per frame
in every cell (1.02-2.4x less than Ultralytics' predictor), and the tensor path on PyTorch is no
faster than Ultralytics' predictor, so that is what auto falls back to. With a named
exported engine (`onnx`, `tensorrt`), an engine that is missing, stale or corrupt is logged once per
imgsz and the call falls back to the tensor path on the PyTorch module: never a crash.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import FrameDecodeError, ModelError
from common.images import jpeg_size
from common.wire import MAX_FRAME_PIXELS, Frame

from . import engine_cache, models, threads
from .detector import Boxes, Detector, YoloDetector, _empty

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "tensor", "onnx", "tensorrt", "ultralytics")
#: Ultralytics' predict defaults, so boxes match its predictor's.
IOU = 0.7
MAX_DET = 300
PAD_VALUE = 114


def letterbox_params(h: int, w: int, imgsz: int, stride: int, rect: bool) -> tuple[int, int, int, int, int, int]:
    """(new_h, new_w, top, left, canvas_h, canvas_w), computed as Ultralytics' LetterBox does."""
    r = min(imgsz / h, imgsz / w)
    nw, nh = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = imgsz - nw, imgsz - nh
    if rect:
        dw, dh = dw % stride, dh % stride
    pad_w, pad_h = dw / 2, dh / 2
    top, bottom = round(pad_h - 0.1), round(pad_h + 0.1)
    left, right = round(pad_w - 0.1), round(pad_w + 0.1)
    return nh, nw, top, left, nh + top + bottom, nw + left + right


class TensorDetector:
    """One model on one device through the tensor path; `backend` is torch, onnx or tensorrt."""

    def __init__(
        self,
        variant: str,
        *,
        device: str = "cpu",
        half: bool | None = None,
        backend: str = "torch",
        engine_batch: int = 8,
        warmup_imgsz: int = 320,
        fallback: str = "torch",
    ):
        """`fallback`: what runs an imgsz that no exported engine fits: `torch` (this path on the
        PyTorch module) or `ultralytics` (its predictor; `auto`)."""
        import torch  # noqa: PLC0415

        self.variant = variant
        self.device = device
        self.torch_device = torch.device(device)
        cuda = device.startswith("cuda")
        self.half = cuda if half is None else (half and cuda)
        self.backend = backend
        self.engine_batch = engine_batch
        self.fallback = fallback
        self._reference: YoloDetector | None = None
        yolo = models.load(variant)
        names = yolo.names
        self.names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        module = yolo.model
        module = module.fuse(verbose=False) if hasattr(module, "fuse") else module
        module = module.to(self.torch_device).eval()
        #: oneDNN's fast layout on x86 CPUs, as Ultralytics does; inputs are given in it too (a
        #: channels-first input is converted by the first conv, slower at batch 1).
        self.channels_last = (
            not cuda and platform.machine() in ("x86_64", "AMD64") and torch.backends.mkldnn.is_available()
        )
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module.half() if self.half else module.float()
        self.module.register_forward_pre_hook(lambda *_: threads.record_seen())
        self.stride = max(int(module.stride.max()), 32)
        #: imgsz -> the exported engine's runner, or None where none fits (the reason logged once).
        self._engines: dict[int, Any] = {}
        self._sizes: set[int] = set()  # the imgsz streams ran (not the warm-up's)
        self._side = torch.cuda.Stream(device=self.torch_device) if cuda else None
        t0 = time.perf_counter()
        self.predict([np.zeros((warmup_imgsz, warmup_imgsz, 3), dtype=np.uint8)], conf=0.5, imgsz=warmup_imgsz)
        self._sizes.clear()
        log.info(
            "model %s on %s: tensor path, engine %s, half=%s, warm in %.2f s",
            variant,
            device,
            self.engine_name(warmup_imgsz),
            self.half,
            time.perf_counter() - t0,
        )

    # -- which engine runs ------------------------------------------------------------------------

    def engines_in_use(self) -> dict[int, str]:
        """imgsz -> the engine that ran it, for every imgsz this detector has run."""
        return {imgsz: self.engine_name(imgsz) for imgsz in sorted(self._sizes)}

    def engine_name(self, imgsz: int) -> str:
        runner = self._runner(imgsz)
        if runner is not None:
            return runner.name
        return "torch" if self.backend == "torch" else self.fallback

    def _fallback(self, imgsz: int) -> YoloDetector | None:
        """Ultralytics' predictor where it runs `imgsz` (no engine fits, and the fallback is it)."""
        if self.fallback != "ultralytics" or self.backend == "torch" or self._runner(imgsz) is not None:
            return None
        if self._reference is None:
            self._reference = YoloDetector(self.variant, device=self.device, half=self.half, warmup_imgsz=imgsz)
        return self._reference

    def _runner(self, imgsz: int) -> Any:
        if self.backend == "torch":
            return None
        if imgsz not in self._engines:
            self._engines[imgsz] = self._open_engine(imgsz)
        return self._engines[imgsz]

    def _open_engine(self, imgsz: int) -> Any:
        fmt = "engine" if self.backend == "tensorrt" else "onnx"
        try:
            key = engine_cache.device_key(
                self.variant, fmt, half=self.half, batch=self.engine_batch, imgsz=imgsz, device=self.device
            )
            path, why = engine_cache.lookup(key)
            if path is None:
                raise ModelError(why)
            runner = OnnxRunner(path) if fmt == "onnx" else TensorRTRunner(path, self.torch_device, self.half)
        except ModelError as exc:
            log.warning(
                "model %s imgsz %d: no usable %s engine, using %s instead: %s",
                self.variant,
                imgsz,
                fmt,
                "Ultralytics' predictor" if self.fallback == "ultralytics" else "the PyTorch weights",
                exc,
            )
            return None
        log.info("model %s imgsz %d on %s: using %s engine %s", self.variant, imgsz, self.device, fmt, path)
        return runner

    # -- the path ---------------------------------------------------------------------------------

    def predict(
        self, images: list[np.ndarray], *, conf: float, imgsz: int, classes: list[int] | None = None
    ) -> list[Boxes]:
        """Boxes per BGR frame (the Detector protocol); `classes` filtered inside NMS (None: all)."""
        import torch  # noqa: PLC0415

        if not images:
            return []
        self._sizes.add(imgsz)
        if classes is not None and not classes:
            return [_empty() for _ in images]
        reference = self._fallback(imgsz)
        if reference is not None:
            return reference.predict(images, conf=conf, imgsz=imgsz, classes=classes)
        if len({im.shape for im in images}) == 1:
            host = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).flip(1)  # B,3,H,W RGB
            frames = list(self._to_device(host).unbind(0))
        else:
            frames = [self._to_device(torch.from_numpy(im).permute(2, 0, 1).flip(0)) for im in images]
        return self._detect(frames, conf=conf, imgsz=imgsz, classes=classes)

    def predict_jpeg(
        self, jpegs: list[bytes], *, conf: float, imgsz: int, sizes: list[tuple[int, int]] | None = None
    ) -> list[Boxes]:
        """Boxes per JPEG, decoded on this device (nvJPEG on CUDA); coordinates in the decoded frame.

        `sizes` ((w, h) per frame, as the header said when it was bounds-checked) must match what
        was decoded, or FrameDecodeError."""
        import torch  # noqa: PLC0415
        from torchvision.io import ImageReadMode, decode_jpeg  # noqa: PLC0415

        if not jpegs:
            return []
        self._sizes.add(imgsz)
        data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
        try:
            frames = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.torch_device)
        except RuntimeError as exc:
            raise FrameDecodeError(f"JPEG decode failed: {exc}") from exc
        if sizes is not None:
            for f, (w, h) in zip(frames, sizes, strict=True):
                if (f.shape[2], f.shape[1]) != (w, h):
                    raise FrameDecodeError(f"JPEG decoded to {f.shape[2]}x{f.shape[1]}, header said {w}x{h}")
        reference = self._fallback(imgsz)
        if reference is not None:  # it takes BGR arrays on the host
            images = [f.flip(0).permute(1, 2, 0).cpu().numpy() for f in frames]
            return reference.predict(images, conf=conf, imgsz=imgsz)
        return self._detect(list(frames), conf=conf, imgsz=imgsz)

    def _to_device(self, host: Any) -> Any:
        """`host` on this device: from pinned memory on the side stream on CUDA (the compute stream
        waits for the copy only, not for the side stream's later work)."""
        import torch  # noqa: PLC0415

        if self._side is None:
            return host
        pinned = host.contiguous().pin_memory()
        with torch.cuda.stream(self._side):
            dev = pinned.to(self.torch_device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._side)
        torch.cuda.current_stream(self.torch_device).wait_event(done)
        dev.record_stream(torch.cuda.current_stream(self.torch_device))
        return dev

    def _detect(self, frames: list[Any], *, conf: float, imgsz: int, classes: list[int] | None = None) -> list[Boxes]:
        import torch  # noqa: PLC0415
        from ultralytics.utils.nms import non_max_suppression  # noqa: PLC0415
        from ultralytics.utils.ops import scale_boxes  # noqa: PLC0415

        runner = self._runner(imgsz)
        rect = runner is None or runner.dynamic
        with torch.inference_mode():
            x = self._letterbox(frames, imgsz=imgsz, rect=rect)
            preds = self._forward(x, runner)
            dets = non_max_suppression(preds, conf, IOU, classes=classes, max_det=MAX_DET)
            out = []
            for frame, det in zip(frames, dets, strict=True):
                if len(det) == 0:
                    out.append(_empty())
                    continue
                det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], frame.shape[1:])
                out.append(det[:, :6].float().cpu().numpy().astype(np.float32))
        return out

    def _letterbox(self, frames: list[Any], *, imgsz: int, rect: bool) -> Any:
        """One B,3,h,w float batch: resized (bilinear, as cv2.INTER_LINEAR), padded with 114, /255."""
        import torch  # noqa: PLC0415
        import torch.nn.functional as F  # noqa: PLC0415

        dtype = torch.float16 if self.half else torch.float32
        pad = PAD_VALUE / 255.0
        if len({tuple(f.shape) for f in frames}) == 1:
            _, h, w = frames[0].shape
            nh, nw, top, left, ch, cw = letterbox_params(h, w, imgsz, self.stride, rect)
            batch = torch.stack(frames).to(dtype if self.half else torch.float32)
            if (nh, nw) != (h, w):  # as cv2.resize on uint8: interpolate, then round to whole levels
                batch = F.interpolate(batch.float(), size=(nh, nw), mode="bilinear", align_corners=False)
                batch = batch.round_().clamp_(0, 255).to(dtype)
            batch = batch.mul_(1 / 255.0)
            if (ch, cw) == (nh, nw):
                return batch.contiguous()
            out = torch.full((len(frames), 3, ch, cw), pad, dtype=dtype, device=batch.device)
            out[:, :, top : top + nh, left : left + nw] = batch
            return out
        # Mixed sizes: each resized on its own into one square canvas (Ultralytics does the same).
        out = torch.full((len(frames), 3, imgsz, imgsz), pad, dtype=dtype, device=frames[0].device)
        for i, f in enumerate(frames):
            _, h, w = f.shape
            nh, nw, top, left, _, _ = letterbox_params(h, w, imgsz, self.stride, rect=False)
            img = F.interpolate(f[None].float(), size=(nh, nw), mode="bilinear", align_corners=False)
            out[i, :, top : top + nh, left : left + nw] = img[0].round_().clamp_(0, 255).mul_(1 / 255.0).to(dtype)
        return out

    def _forward(self, x: Any, runner: Any) -> Any:
        if runner is None:
            if self.channels_last:
                import torch  # noqa: PLC0415

                x = x.contiguous(memory_format=torch.channels_last)
            y = self.module(x)
            return y[0] if isinstance(y, (list, tuple)) else y
        return runner(x)


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
    dynamic = True

    def __init__(self, path: Any):
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


class TensorRTRunner:
    """A TensorRT engine through Ultralytics' AutoBackend (which splits and zero-pads batches to the
    engine's static batch, and drops the padding's outputs)."""

    name = "tensorrt"
    dynamic = False

    def __init__(self, path: Any, device: Any, half: bool):
        from ultralytics.nn.autobackend import AutoBackend  # noqa: PLC0415

        try:
            self.backend = AutoBackend(str(path), device=device, fp16=half, verbose=False)
        except (RuntimeError, OSError, ValueError, AttributeError, ImportError, TypeError) as exc:
            raise ModelError(f"TensorRT cannot load {path}: {exc}") from exc

    def __call__(self, x: Any) -> Any:
        y = self.backend(x)
        return y[0] if isinstance(y, (list, tuple)) else y


def build(variant: str, *, device: str, half: bool | None, engine: str = "auto", engine_batch: int = 8) -> Detector:
    """The detector `engine` names for this device (see the module docstring).

    `auto` runs, per imgsz, an exported engine where one was exported for this model and device
    (TensorRT on CUDA, ONNX Runtime on the CPU; `rtai models export`), else Ultralytics' own
    predictor, the reference; the tensor path is chosen by name (`--engine tensor`)."""
    if engine == "ultralytics":
        return YoloDetector(variant, device=device, half=half)
    if engine in ("torch", "tensor"):
        backend = "torch"
    elif engine == "auto":
        backend = "tensorrt" if device.startswith("cuda") else "onnx"
        if not _exported(variant, backend):
            fmt = "engine" if backend == "tensorrt" else "onnx"
            log.info(
                "model %s on %s: no %s engine exported in %s (rtai models export %s --format %s); "
                "using Ultralytics' predictor",
                variant,
                device,
                backend,
                engine_cache.cache_dir(),
                variant,
                fmt,
            )
            return YoloDetector(variant, device=device, half=half)
        return TensorDetector(
            variant, device=device, half=half, backend=backend, engine_batch=engine_batch, fallback="ultralytics"
        )
    else:
        backend = engine
    if backend == "tensorrt" and not device.startswith("cuda"):
        log.warning("engine tensorrt needs CUDA; %s on %s uses the PyTorch weights", variant, device)
        backend = "torch"
    return TensorDetector(variant, device=device, half=half, backend=backend, engine_batch=engine_batch)


def _exported(variant: str, backend: str) -> bool:
    """Whether the engine cache lists any file of this model in this format (its key is checked at use)."""
    fmt = "engine" if backend == "tensorrt" else "onnx"
    wanted = Path(models.canonical(variant)).name
    for entry in engine_cache.read_manifest().values():
        key = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(key, dict) and key.get("format") == fmt:
            if Path(models.canonical(str(key.get("model")))).name == wanted:
                return True
    return False


def detect_jpeg_frames(detector: Detector, frames: list[Frame], *, conf: float, imgsz: int) -> list[Boxes] | None:
    """The job loop's fast path: boxes for `frames` (past the stale check) decoded on the detector's
    device in one batch, or None where it does not apply (a detector without `predict_jpeg`, a raw
    frame, a JPEG header over the pixel cap or unlike the payload's size, a batch that fails to
    decode): the caller then decodes frame by frame as before, which counts each bad frame."""
    fast = getattr(detector, "predict_jpeg", None)
    if fast is None or not frames or any(f.enc != "jpeg" for f in frames):
        return None
    try:
        for f in frames:
            w, h = jpeg_size(f.data)  # headers only: nothing is decoded before every frame passes
            if w * h > MAX_FRAME_PIXELS or (w, h) != (f.dw, f.dh):
                return None
        return fast([f.data for f in frames], conf=conf, imgsz=imgsz, sizes=[(f.dw, f.dh) for f in frames])
    except FrameDecodeError as exc:
        log.info("batched JPEG decode refused (%s): decoding frame by frame", exc)
        return None
