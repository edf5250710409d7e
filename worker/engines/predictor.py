"""The `ultralytics` engine: Ultralytics' own predictor, the reference every other engine matches."""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import models, threads
from .base import Boxes, empty_boxes

log = logging.getLogger(__name__)


class YoloDetector:
    """An Ultralytics YOLO model loaded once on one device (FP16 on CUDA unless told otherwise)."""

    name = "ultralytics"

    def __init__(
        self,
        variant: str,
        *,
        device: str = "cpu",
        half: bool | None = None,
        warmup_imgsz: int = 320,
        allow_path: bool = False,
    ):
        self.variant = variant
        self.device = device
        self.half = device.startswith("cuda") if half is None else (half and device.startswith("cuda"))
        self.model = models.load(variant, allow_path=allow_path)
        weights = self.model.ckpt_path or variant
        names = self.model.names
        self.names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        self.threads = _torch_threads()  # the count the worker set: held through Ultralytics' resets
        self._sizes: set[int] = set()
        self.model.model.register_forward_pre_hook(lambda *_: threads.record_seen())
        t0 = time.perf_counter()
        self.predict([np.zeros((warmup_imgsz, warmup_imgsz, 3), dtype=np.uint8)], conf=0.5, imgsz=warmup_imgsz)
        self._sizes.clear()  # the warm-up ran no stream
        log.info(
            "model %s (%s) on %s half=%s warm in %.2f s", variant, weights, device, self.half, time.perf_counter() - t0
        )

    def predict(
        self, images: list[np.ndarray], *, conf: float, imgsz: int, classes: list[int] | None = None
    ) -> list[Boxes]:
        """`classes`: indices to keep (None: all; []: none) — filtered inside NMS, so they cost nothing later."""
        self._sizes.add(imgsz)
        if classes is not None and not classes:
            return [empty_boxes() for _ in images]
        # FP16 through Ultralytics' `quantize` (its replacement for the deprecated `half`).
        precision = {"quantize": 16} if self.half else {}
        results = self.model.predict(
            images, imgsz=imgsz, conf=conf, device=self.device, verbose=False, classes=classes, **precision
        )
        threads.reapply(self.threads)
        out = []
        for r in results:
            b = r.boxes
            if b is None or len(b) == 0:
                out.append(empty_boxes())
                continue
            arr = np.concatenate(
                [
                    b.xyxy.float().cpu().numpy(),
                    b.conf.float().cpu().numpy()[:, None],
                    b.cls.float().cpu().numpy()[:, None],
                ],
                axis=1,
            )
            out.append(arr.astype(np.float32))
        return out

    def engines_in_use(self) -> dict[int, str]:
        return dict.fromkeys(sorted(self._sizes), "ultralytics")


def _torch_threads() -> int:
    import torch  # noqa: PLC0415

    return torch.get_num_threads()
