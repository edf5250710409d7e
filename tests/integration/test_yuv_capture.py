"""PyAV hands on JPEG-ready YUV planes (producer/capture.py `retrieve(yuv=True)`): the JPEG made from
them must show the same picture as the one made from BGR, whatever colour matrix the camera tags,
at the size sent (odd sizes included); and it costs less (BENCHMARKS.md, "Real cameras")."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.images import YuvImage, decode_frame, encode_frame, jpeg_size
from producer.capture import AvCapture
from producer.motion import MotionGate
from producer.preview import WATCHED_WIDTH, watched_jpeg

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (scripts/install_system_deps.sh)")


def _clip(path: Path, *, size: str, tags: list[str]) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=10", "-t", "1",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *tags, str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


def _pictures(path: Path, max_side: int) -> tuple[np.ndarray, YuvImage, tuple[int, int]]:
    """The same decoded frame as BGR and as YUV planes, both scaled to fit max_side."""
    cap = AvCapture(str(path), live=False, open_timeout_s=5, read_timeout_s=5, max_side=max_side)
    assert cap.is_open(), cap.open_error
    try:
        for _ in range(5):  # a frame from the clip's middle, past the first keyframe
            assert cap.grab()
        bgr, size = cap.retrieve()
        yuv, size2 = cap.retrieve(yuv=True)
    finally:
        cap.release()
    assert isinstance(bgr, np.ndarray) and isinstance(yuv, YuvImage)
    assert size == size2
    return bgr, yuv, size


def _psnr_ycrcb(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """PSNR of luma, Cr and Cb between two BGR pictures."""
    ya, yb = cv2.cvtColor(a, cv2.COLOR_BGR2YCrCb), cv2.cvtColor(b, cv2.COLOR_BGR2YCrCb)
    y, cr, cb = (float(cv2.PSNR(ya[..., i].copy(), yb[..., i].copy())) for i in range(3))
    return y, cr, cb


@pytest.mark.parametrize(
    ("size", "tags", "max_side"),
    [
        ("1280x720", [], 640),  # untagged: BT.601 assumed, as FFmpeg does
        ("1280x720", ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"], 640),  # an HD camera
        ("1280x720", ["-color_range", "pc"], 640),  # a camera that sends full range already
        ("1280x720", [], 331),  # an odd size sent: 331x186, chroma rounded up
    ],
    ids=["untagged", "bt709", "full-range", "odd-size"],
)
def test_the_jpeg_from_yuv_planes_shows_what_the_bgr_path_shows(tmp_path, size, tags, max_side):
    bgr, yuv, camera = _pictures(_clip(tmp_path / "clip.mp4", size=size, tags=tags), max_side)
    assert camera == (1280, 720)
    assert yuv.size == (bgr.shape[1], bgr.shape[0])
    assert max(yuv.size) == max_side
    via_bgr = encode_frame(bgr, seq=0, t_capture=0.0, imgsz=max_side, camera_size=camera)
    via_yuv = encode_frame(yuv, seq=0, t_capture=0.0, imgsz=max_side, camera_size=camera)
    assert (via_yuv.w, via_yuv.h, via_yuv.dw, via_yuv.dh) == (via_bgr.w, via_bgr.h, via_bgr.dw, via_bgr.dh)
    a, b = decode_frame(via_bgr), decode_frame(via_yuv)
    assert a.shape == b.shape
    # Both are lossy 4:2:0 JPEGs of one picture. Luma alike within JPEG's own error (measured 44-48 dB):
    # limited range read as full, or BT.709 read as BT.601, gives 24-29 dB. Chroma differs more at
    # colour edges (testsrc2 is all edges): the planes are subsampled at the size sent, not before.
    luma, cr, cb = _psnr_ycrcb(a, b)
    assert luma > 40, (luma, cr, cb)
    assert min(cr, cb) > 24, (luma, cr, cb)
    assert max(abs(float(a[..., i].mean()) - float(b[..., i].mean())) for i in range(3)) < 2.5
    # Its planes converted to BGR (raw encoding) give what a JPEG decoder makes of them.
    luma, cr, cb = _psnr_ycrcb(yuv.bgr(), b)
    assert luma > 38 and min(cr, cb) > 30, (luma, cr, cb)


def test_a_yuv_picture_is_resized_and_encoded_at_the_size_sent(tmp_path):
    """A picture larger than imgsz (a stream page wants 960 px meanwhile) is resized plane by plane."""
    bgr, yuv, camera = _pictures(_clip(tmp_path / "clip.mp4", size="1280x720", tags=[]), 960)
    frame = encode_frame(yuv, seq=0, t_capture=0.0, imgsz=320, camera_size=camera)
    assert (frame.w, frame.h, frame.dw, frame.dh) == (1280, 720, 320, 180)
    small = cv2.resize(bgr, (320, 180), interpolation=cv2.INTER_AREA)
    luma, _, _ = _psnr_ycrcb(decode_frame(frame), small)
    assert luma > 38, luma
    raw = encode_frame(yuv, seq=0, t_capture=0.0, imgsz=320, enc="raw", camera_size=camera)
    assert len(raw.data) == 320 * 180 * 3


def test_motion_gating_compares_the_same_grey_picture_from_yuv_as_from_bgr(tmp_path):
    bgr, yuv, _ = _pictures(_clip(tmp_path / "clip.mp4", size="1280x720", tags=[]), 640)
    gate = MotionGate.__new__(MotionGate)  # small() reads nothing of the gate's settings
    a, b = gate.small(bgr), gate.small(yuv)
    assert a.shape == b.shape
    assert float(np.abs(a.astype(int) - b.astype(int)).mean()) < 3.0


def test_a_stream_pages_preview_is_made_from_the_planes_at_its_width(tmp_path):
    """While a stream page is open, PyAV converts at 960 px and the large preview is made from it."""
    bgr, yuv, _ = _pictures(_clip(tmp_path / "clip.mp4", size="1920x1080", tags=[]), 1280)
    jpeg = watched_jpeg(yuv)
    assert jpeg_size(jpeg) == (WATCHED_WIDTH, 540)
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    luma, _, _ = _psnr_ycrcb(shown, cv2.resize(bgr, (WATCHED_WIDTH, 540), interpolation=cv2.INTER_AREA))
    assert luma > 38, luma
