"""The guide's in-process multi-GPU API: `from realtime_ai import MultiGPUYOLOv11Detector, DetectorType`."""

from .detector import DetectorType, MultiGPUYOLOv11Detector

__all__ = ["DetectorType", "MultiGPUYOLOv11Detector"]
