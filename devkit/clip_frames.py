"""The demo clip as numbered JPEG files, what scripts/rtsp_server.py --frames loops over as a camera."""

from __future__ import annotations

from pathlib import Path

import cv2

from common.config import DEMO_CLIP


def write_clip_frames(out: Path, clip: Path = DEMO_CLIP) -> int:
    """Every frame of `clip` as out/00000.jpg, 00001.jpg, ... (quality 95); how many were written."""
    cap = cv2.VideoCapture(str(clip))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        cv2.imwrite(str(out / f"{n:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        n += 1
    cap.release()
    return n
