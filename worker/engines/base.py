"""What every engine gives the worker: boxes per frame, and which engine ran each input size."""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Boxes of one image: float32 array of shape (N, 6): x1, y1, x2, y2, conf, cls.
Boxes = np.ndarray


class Detector(Protocol):
    variant: str
    names: list[str]

    def predict(
        self, images: list[np.ndarray], *, conf: float, imgsz: int, classes: list[int] | None = None
    ) -> list[Boxes]:
        """Boxes per BGR frame; `classes`: indices to keep (None: all; []: none)."""
        ...

    def engines_in_use(self) -> dict[int, str]:
        """imgsz -> the engine that ran it, for every imgsz this detector has run."""
        ...


def empty_boxes() -> Boxes:
    return np.zeros((0, 6), dtype=np.float32)
