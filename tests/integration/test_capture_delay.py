"""The producer's RTSP capture delay: frames reach it with the delay of a one-thread decode.

OpenCV's FFmpeg backend decodes with frame threading on every core unless the capture is opened
with CAP_PROP_N_THREADS (the `threads` entry of OPENCV_FFMPEG_CAPTURE_OPTIONS never reaches the
decoder): one frame more of delay, ~74 ms instead of ~37 ms for 640x480@30 on 2 cores. The source
burns each frame's wall time into its pixels, so the delay is measured on the frames themselves.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator

import pytest

from devkit.stamp import read_stamp
from producer.source import VideoSource

from ..conftest import _start_rtsp


@pytest.fixture(scope="module")
def rtsp_stamp() -> Iterator[str]:
    proc, url = _start_rtsp(["--stamp", "--fps", "30", "--width", "640", "--height", "480"])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("decode", ["cpu", "pyav"])
def test_capture_decodes_on_one_thread_and_frames_arrive_within_two_frame_times(rtsp_stamp, decode):
    src = VideoSource(rtsp_stamp, decode=decode).start()
    delays, last = [], -1
    try:
        while len(delays) < 90:
            frame = src.newest(last, timeout=5)
            assert frame is not None, f"no frame: {src.state} {src.reason}"
            last = frame.index
            stamp = read_stamp(frame.image)
            if stamp is not None and frame.index > 15:  # past the first GOP's burst
                delays.append(frame.t_capture * 1000 - stamp)
    finally:
        src.stop()
    p50 = statistics.median(delays)
    # One decode thread: ~37 ms here; OpenCV's default (frame threads): ~74 ms, over two frame times.
    assert 0 < p50 < 60, f"stamp-to-read delay p50 {p50:.0f} ms"
    assert src.decode_threads == 1


@pytest.mark.timeout(60)
def test_sampling_5_of_30_fps_converts_only_what_it_samples_and_keeps_frames_fresh(rtsp_stamp):
    """A consumer sampling 5 frames a second says when it next wants one (want_from): most decoded
    frames are never converted to BGR, and each sampled frame is as fresh as before (stamp-to-read
    under 60 ms) and at most one frame time (plus the slack) old when the tick takes it."""
    import time  # noqa: PLC0415

    src = VideoSource(rtsp_stamp).start()
    delays, ages, last = [], [], -1
    try:
        frame = src.newest(last, timeout=5)
        assert frame is not None, f"no frame: {src.state} {src.reason}"
        last, tick, start = frame.index, time.monotonic(), (src.grabbed, src.converted)
        for _ in range(25):
            tick += 0.2
            src.want_from(tick - 0.05)
            time.sleep(max(0.0, tick - time.monotonic()))
            frame = src.newest(last, timeout=1)
            assert frame is not None
            ages.append(time.time() - frame.t_capture)
            last = frame.index
            stamp = read_stamp(frame.image)
            if stamp is not None:
                delays.append(frame.t_capture * 1000 - stamp)
        grabbed, converted = src.grabbed - start[0], src.converted - start[1]
    finally:
        src.stop()
    assert grabbed >= 100, grabbed  # 5 s of a 30 fps camera, every frame decoded
    assert converted <= grabbed * 0.5, f"{converted} of {grabbed} frames converted"
    assert statistics.median(delays) < 60
    assert statistics.median(ages) < 0.05 + 1 / 30 + 0.02, ages
