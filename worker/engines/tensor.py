"""The `torch` engine, and the path the exported engines (`onnx`, `tensorrt`) run in: decoded frames
to boxes with every step a batched tensor op.

BGR frames -> one tensor batch (on CUDA copied from pinned memory on a side stream, so one batch's
copy overlaps the previous batch's compute when the worker prefetches) -> one letterbox and
normalisation for the batch -> the model's forward (the PyTorch module, FP16 on CUDA; or an exported
engine's runner: onnxrt.py, trt.py) -> NMS on the same device -> boxes, scaled to the frame, to the
host. The letterbox follows Ultralytics' (`LetterBox`: same scale, rounding, grey 114 padding,
minimal stride-aligned rectangle for a batch of equal shapes on a dynamic-shape backend), so the
boxes match its predictor's (predictor.py), which stays the reference.

An exported engine that is missing, stale or corrupt for an imgsz is logged once and that imgsz runs
on the fallback instead (the PyTorch module, or Ultralytics' predictor under `auto`): never a crash.
"""

from __future__ import annotations

import logging
import platform
import time
from typing import Any

import numpy as np

from common.errors import ModelError

from .. import engine_cache, models, threads
from .base import Boxes, empty_boxes
from .onnxrt import OnnxRunner
from .predictor import YoloDetector
from .trt import TensorRTRunner

log = logging.getLogger(__name__)

#: The exported engines this path runs, by engine name (`fmt`: the engine cache's format).
RUNNERS: dict[str, type[OnnxRunner] | type[TensorRTRunner]] = {r.name: r for r in (OnnxRunner, TensorRTRunner)}
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
        allow_path: bool = False,
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
        self.allow_path = allow_path
        yolo = models.load(variant, allow_path=allow_path)
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
            self._reference = YoloDetector(
                self.variant, device=self.device, half=self.half, warmup_imgsz=imgsz, allow_path=self.allow_path
            )
        return self._reference

    def _runner(self, imgsz: int) -> Any:
        if self.backend == "torch":
            return None
        if imgsz not in self._engines:
            self._engines[imgsz] = self._open_engine(imgsz)
        return self._engines[imgsz]

    def _open_engine(self, imgsz: int) -> Any:
        runner_type = RUNNERS[self.backend]
        fmt = runner_type.fmt
        try:
            key = engine_cache.device_key(
                self.variant, fmt, half=self.half, batch=self.engine_batch, imgsz=imgsz, device=self.device
            )
            path, why = engine_cache.lookup(key)
            if path is None:
                raise ModelError(why)
            runner = runner_type(path, device=self.torch_device, half=self.half)
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
            return [empty_boxes() for _ in images]
        reference = self._fallback(imgsz)
        if reference is not None:
            return reference.predict(images, conf=conf, imgsz=imgsz, classes=classes)
        if len({im.shape for im in images}) == 1:
            host = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).flip(1)  # B,3,H,W RGB
            frames = list(self._to_device(host).unbind(0))
        else:
            frames = [self._to_device(torch.from_numpy(im).permute(2, 0, 1).flip(0)) for im in images]
        return self._detect(frames, conf=conf, imgsz=imgsz, classes=classes)

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
                    out.append(empty_boxes())
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
