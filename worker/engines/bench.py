"""Detectors for benchmarks: no-op (the fleet's transport ceiling) and a fixed sleep per frame."""

from __future__ import annotations

import time

import numpy as np

from .base import Boxes, empty_boxes


class NoopDetector:
    """Finds nothing, instantly: measures the fleet's transport ceiling."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.names: list[str] = []
        self.engine = "noop"
        self._sizes: set[int] = set()

    def engines_in_use(self) -> dict[int, str]:
        return dict.fromkeys(sorted(self._sizes), self.engine)

    def predict(
        self, images: list[np.ndarray], *, conf: float, imgsz: int, classes: list[int] | None = None
    ) -> list[Boxes]:
        self._sizes.add(imgsz)
        return [empty_boxes() for _ in images]


class SleepDetector(NoopDetector):
    """Costs a fixed time per image: isolates coordination cost from compute when scaling."""

    def __init__(self, variant: str, *, sleep_ms: float) -> None:
        super().__init__(variant)
        self.engine = "sleep"
        self.sleep_s = sleep_ms / 1000.0

    def predict(
        self, images: list[np.ndarray], *, conf: float, imgsz: int, classes: list[int] | None = None
    ) -> list[Boxes]:
        time.sleep(self.sleep_s * len(images))
        return super().predict(images, conf=conf, imgsz=imgsz)
