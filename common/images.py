"""Frame images in and out of the wire format: resize to fit the model, JPEG or raw bytes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from .errors import FrameDecodeError
from .wire import MAX_FRAME_PIXELS, Frame

#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic): the
#: segment that holds the image's height and width.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: Markers that stand alone (no length field): TEM, RST0-7, SOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})


@dataclass(frozen=True, slots=True)
class YuvImage:
    """A picture in JPEG's own layout: full-range YCbCr 4:2:0 planes, Cb (`u`) and Cr (`v`) at half
    the width and height (rounded up), BT.601 as JFIF says.

    PyAV hands pictures on this way (producer/capture.py): the JPEG is encoded from the planes and
    no BGR copy is made. `bgr()` is there for what needs pixels (raw encoding)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return int(self.y.shape[1]), int(self.y.shape[0])

    def resized(self, w: int, h: int) -> YuvImage:
        """Each plane scaled by area averaging to a w x h picture."""
        cw, ch = (w + 1) // 2, (h + 1) // 2
        return YuvImage(
            cv2.resize(self.y, (w, h), interpolation=cv2.INTER_AREA),
            cv2.resize(self.u, (cw, ch), interpolation=cv2.INTER_AREA),
            cv2.resize(self.v, (cw, ch), interpolation=cv2.INTER_AREA),
        )

    def jpeg(self, quality: int) -> bytes:
        try:
            return bytes(simplejpeg.encode_jpeg_yuv_planes(self.y, self.u, self.v, quality=quality))
        except ValueError as exc:
            raise FrameDecodeError(f"JPEG encoding failed: {exc}") from exc

    def bgr(self) -> np.ndarray:
        size = self.size
        u = cv2.resize(self.u, size, interpolation=cv2.INTER_LINEAR)
        v = cv2.resize(self.v, size, interpolation=cv2.INTER_LINEAR)
        return cv2.cvtColor(cv2.merge([self.y, v, u]), cv2.COLOR_YCrCb2BGR)


#: A captured picture: BGR pixels (OpenCV's decoders) or YUV planes (PyAV's).
Picture = np.ndarray | YuvImage


def picture_size(image: Picture) -> tuple[int, int]:
    """(width, height) of a captured picture."""
    if isinstance(image, YuvImage):
        return image.size
    return int(image.shape[1]), int(image.shape[0])


def fit_size(w: int, h: int, imgsz: int) -> tuple[int, int]:
    """Size with the long side at most imgsz, aspect kept; never upscales."""
    scale = min(1.0, imgsz / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def encode_frame(
    img: Picture,
    *,
    seq: int,
    t_capture: float,
    imgsz: int,
    enc: str = "jpeg",
    quality: int = 90,
    camera_size: tuple[int, int] | None = None,
) -> Frame:
    """One frame resized to fit imgsz and encoded. `camera_size` (w, h): the camera's frame size when
    `img` was already scaled down by the decoder (boxes are given in the camera's pixels)."""
    iw, ih = picture_size(img)
    dw, dh = fit_size(iw, ih, imgsz)
    w, h = camera_size if camera_size is not None else (iw, ih)
    if isinstance(img, YuvImage):
        planes = img if (dw, dh) == (iw, ih) else img.resized(dw, dh)
        data = planes.jpeg(quality) if enc == "jpeg" else planes.bgr().tobytes()
        return Frame(seq=seq, t_capture=t_capture, w=w, h=h, enc=enc, dw=dw, dh=dh, data=data)
    small = img if (dw, dh) == (iw, ih) else cv2.resize(img, (dw, dh), interpolation=cv2.INTER_AREA)
    if enc == "jpeg":
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise FrameDecodeError("JPEG encoding failed")
        data = buf.tobytes()
    else:
        data = np.ascontiguousarray(small, dtype=np.uint8).tobytes()
    return Frame(seq=seq, t_capture=t_capture, w=w, h=h, enc=enc, dw=dw, dh=dh, data=data)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame header, read without decoding anything.

    Walks the marker segments (APPn/EXIF, DQT, DHT ... may come first) to the first SOFn; any
    structure that is not a JPEG's raises FrameDecodeError."""
    if data[:2] != b"\xff\xd8":
        raise FrameDecodeError("not a JPEG (no SOI marker)")
    i, end = 2, len(data)
    while i < end:
        if data[i] != 0xFF:
            raise FrameDecodeError(f"JPEG marker expected at byte {i}")
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any SOF
            break
        if i + 2 > end:
            break
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2:
            raise FrameDecodeError(f"JPEG segment length {length} at byte {i}")
        if marker in _SOF:
            if length < 7 or i + 7 > end:
                break
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            return width, height
        i += length
    raise FrameDecodeError("JPEG has no start-of-frame header")


def decode_frame(frame: Frame) -> np.ndarray:
    """The BGR image of a frame, at its encoded size (dw x dh).

    A JPEG's own header is checked against dw x dh and the pixel cap before anything is decoded,
    so a small file that claims a huge image (a decompression bomb) never gets a buffer."""
    if frame.enc == "raw":
        expected = frame.dw * frame.dh * 3
        if len(frame.data) != expected:
            raise FrameDecodeError(
                f"frame {frame.seq}: raw data is {len(frame.data)} bytes, expected {expected} for "
                f"{frame.dw}x{frame.dh}x3"
            )
        return np.frombuffer(frame.data, dtype=np.uint8).reshape(frame.dh, frame.dw, 3)
    try:
        width, height = jpeg_size(frame.data)
    except FrameDecodeError as exc:
        raise FrameDecodeError(
            f"frame {frame.seq}: JPEG data ({len(frame.data)} bytes) does not decode: {exc}"
        ) from exc
    if width * height > MAX_FRAME_PIXELS:
        raise FrameDecodeError(
            f"frame {frame.seq}: JPEG header says {width}x{height}, over the {MAX_FRAME_PIXELS} pixel cap; not decoded"
        )
    if (width, height) != (frame.dw, frame.dh):
        raise FrameDecodeError(
            f"frame {frame.seq}: JPEG header says {width}x{height}, payload says {frame.dw}x{frame.dh}; not decoded"
        )
    img = cv2.imdecode(np.frombuffer(frame.data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FrameDecodeError(f"frame {frame.seq}: JPEG data ({len(frame.data)} bytes) does not decode")
    if img.shape[1] != frame.dw or img.shape[0] != frame.dh:
        raise FrameDecodeError(
            f"frame {frame.seq}: JPEG is {img.shape[1]}x{img.shape[0]}, payload says {frame.dw}x{frame.dh}"
        )
    return img
