"""Frame images in and out of the wire format: resize to fit the model, JPEG or raw bytes."""

from __future__ import annotations

import cv2
import numpy as np

from .errors import FrameDecodeError
from .wire import Frame


def fit_size(w: int, h: int, imgsz: int) -> tuple[int, int]:
    """Size with the long side at most imgsz, aspect kept; never upscales."""
    scale = min(1.0, imgsz / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def encode_frame(
    img: np.ndarray, *, seq: int, t_capture: float, imgsz: int, enc: str = "jpeg", quality: int = 90
) -> Frame:
    h, w = img.shape[:2]
    dw, dh = fit_size(w, h, imgsz)
    small = img if (dw, dh) == (w, h) else cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)
    if enc == "jpeg":
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise FrameDecodeError("JPEG encoding failed")
        data = buf.tobytes()
    else:
        data = np.ascontiguousarray(small, dtype=np.uint8).tobytes()
    return Frame(seq=seq, t_capture=t_capture, w=w, h=h, enc=enc, dw=dw, dh=dh, data=data)


def decode_frame(frame: Frame) -> np.ndarray:
    """The BGR image of a frame, at its encoded size (dw x dh)."""
    if frame.enc == "raw":
        expected = frame.dw * frame.dh * 3
        if len(frame.data) != expected:
            raise FrameDecodeError(
                f"frame {frame.seq}: raw data is {len(frame.data)} bytes, expected {expected} for "
                f"{frame.dw}x{frame.dh}x3"
            )
        return np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.dh, frame.dw, 3)
    img = cv2.imdecode(np.frombuffer(frame.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameDecodeError(f"frame {frame.seq}: JPEG data ({len(frame.data)} bytes) does not decode")
    if img.shape[1] != frame.dw or img.shape[0] != frame.dh:
        raise FrameDecodeError(
            f"frame {frame.seq}: JPEG is {img.shape[1]}x{img.shape[0]}, payload says {frame.dw}x{frame.dh}"
        )
    return img
