"""The test RTSP server serves looped frames at the size asked for (--width/--height), or their own."""

from __future__ import annotations

import cv2
import pytest

from ..conftest import _start_rtsp

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(60)]


def _first_frame_size(url: str) -> tuple[int, int]:
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        ok, img = cap.read()
        assert ok, f"no frame from {url}"
        return img.shape[1], img.shape[0]
    finally:
        cap.release()


@pytest.mark.parametrize(("flags", "size"), [([], (320, 240)), (["--width", "640", "--height", "480"], (640, 480))])
def test_frames_are_served_at_their_own_size_or_the_one_asked_for(clip_frames_dir, flags, size):
    proc, url = _start_rtsp(["--frames", str(clip_frames_dir), "--fps", "15", *flags])
    try:
        assert _first_frame_size(url) == size
    finally:
        proc.kill()
        proc.wait()
