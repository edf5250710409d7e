"""The producer against real sources (a video file, a GStreamer RTSP server) and a real Redis."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from common import keys
from common.exitcodes import EXIT_SOURCE
from common.images import decode_frame
from common.wire import decode_batch

from ..helpers import free_port, wait_for
from .fleet import counts


def _clip(path: Path, n: int, size=(640, 360), fps=15) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(n):
        img = np.full((size[1], size[0], 3), 40, np.uint8)
        cv2.rectangle(img, (10 + 5 * i, 50), (90 + 5 * i, 130), (0, 255, 0), -1)
        out.write(img)
    out.release()
    return path


def _blobs(r, stream: str):
    return [decode_batch(r.get(k)) for k in sorted(r.keys(keys.batch_blob(stream, "*")))]


def test_file_source_every_frame_sampled_resized_and_counted(r, procs, tmp_path):
    clip = _clip(tmp_path / "clip.mp4", 30)
    proc = procs.rtai(
        "producer",
        "--source",
        str(clip),
        "--stream",
        "file1",
        "--max-fps",
        "100",
        "--batch-size",
        "4",
        "--max-batch-wait-ms",
        "10000",
        "--imgsz",
        "320",
        "--no-credit-flow",  # no worker: every batch waits in the queue (credit flow would hold one)
    )
    assert procs.finish(proc) == 0, procs.output(proc)
    c = counts(r, "file1")
    assert c["produced"] == 30 and c["in_flight"] == 30
    batches = _blobs(r, "file1")
    assert sum(len(b.frames) for b in batches) == 30
    assert sorted(f.seq for b in batches for f in b.frames) == list(range(30))
    frame = batches[0].frames[0]
    assert (frame.w, frame.h, frame.dw, frame.dh) == (640, 360, 320, 180)
    assert decode_frame(frame).shape == (180, 320, 3)
    assert r.hget(keys.stream("file1"), "state") == b"stopped"
    assert r.llen(keys.queue_key("file1")) == 8


def test_rtsp_source_feeds_batches(r, procs, rtsp_pattern):
    proc = procs.rtai(
        "producer",
        "--source",
        rtsp_pattern,
        "--stream",
        "rtsp1",
        "--max-fps",
        "10",
        "--batch-size",
        "4",
        "--max-batch-wait-ms",
        "10000",
        "--max-frames",
        "12",
        "--no-credit-flow",  # no worker: every batch waits in the queue (credit flow would hold one)
    )
    assert procs.finish(proc, timeout=60) == 0, procs.output(proc)
    assert counts(r, "rtsp1")["produced"] == 12
    frames = [f for b in _blobs(r, "rtsp1") for f in b.frames]
    assert len(frames) == 12
    assert decode_frame(frames[-1]).shape == (240, 320, 3)
    assert all(b.t_capture > a.t_capture for a, b in zip(frames, frames[1:], strict=False))


def test_unreachable_camera_ends_in_error_with_reason(r, procs):
    url = f"rtsp://127.0.0.1:{free_port()}/none"
    proc = procs.rtai("producer", "--source", url, "--stream", "dead", "--max-reconnects", "1")
    assert procs.finish(proc, timeout=60) == EXIT_SOURCE
    out = procs.output(proc)
    assert "Traceback" not in out
    assert r.hget(keys.stream("dead"), "state") == b"error"
    reason = r.hget(keys.stream("dead"), "reason").decode()
    assert "cannot open" in reason and "connection refused by 127.0.0.1" in reason, reason


@pytest.mark.timeout(60)
def test_wrong_rtsp_path_says_not_found(r, procs, rtsp_pattern):
    url = rtsp_pattern.rsplit("/", 1)[0] + "/no-such-path"
    proc = procs.rtai("producer", "--source", url, "--stream", "typo", "--max-reconnects", "0")
    assert procs.finish(proc, timeout=45) == EXIT_SOURCE, procs.output(proc)
    reason = r.hget(keys.stream("typo"), "reason").decode()
    assert "RTSP 404" in reason and "no stream at this path" in reason, reason


@pytest.mark.timeout(60)
def test_unreachable_camera_keeps_reconnecting_until_stopped(r, procs):
    url = f"rtsp://127.0.0.1:{free_port()}/none"
    proc = procs.rtai("producer", "--source", url, "--stream", "flaky")
    wait_for(lambda: r.hget(keys.stream("flaky"), "state") == b"reconnecting", timeout=20, what="state reconnecting")
    assert b"cannot open" in r.hget(keys.stream("flaky"), "reason")
    proc.terminate()
    assert procs.finish(proc, timeout=20) == 0, procs.output(proc)
    assert "Traceback" not in procs.output(proc)


def test_missing_or_unreadable_file_is_the_same_clear_error(r, procs, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video")
    reasons = []
    for stream, path in (("nofile", tmp_path / "nope.mp4"), ("badfile", garbage)):
        proc = procs.rtai("producer", "--source", str(path), "--stream", stream)
        assert procs.finish(proc) == EXIT_SOURCE
        reasons.append(r.hget(keys.stream(stream), "reason").decode().replace(str(path), "PATH"))
    assert reasons == ["cannot open PATH", "cannot open PATH"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("size", "decoder"), [((640, 360), b"cpu"), ((1280, 720), b"pyav")])
def test_the_default_decoder_is_chosen_by_the_cameras_size(r, procs, tmp_path, size, decoder):
    """The default (auto-cpu): OpenCV below 1280x720, PyAV (sampled frames only, converted straight to
    the size sent) from 1280x720 up. Every frame arrives either way, at the size asked for."""
    clip = _clip(tmp_path / "clip.mp4", 8, size=size)
    proc = procs.rtai("producer", "--source", str(clip), "--stream", "size", "--max-fps", "100", "--imgsz", "320",
                      "--no-credit-flow")  # fmt: skip
    assert procs.finish(proc) == 0, procs.output(proc)
    assert r.hget(keys.stream("size"), "decode") == decoder
    frames = [f for b in _blobs(r, "size") for f in b.frames]
    assert len(frames) == 8
    assert (frames[0].w, frames[0].h, frames[0].dw) == (*size, 320)


def test_decode_auto_falls_back_to_cpu_and_says_so(r, procs, tmp_path):
    """No NVDEC here (the pip OpenCV's FFmpeg has no CUVID): auto decodes on the CPU as auto-cpu does
    (OpenCV for this 640x360 clip), logs why and records the decoder in the stream's hash; nvdec alone
    is an error that names NVDEC."""
    clip = _clip(tmp_path / "clip.mp4", 12)
    proc = procs.rtai("producer", "--source", str(clip), "--stream", "hw", "--max-fps", "100", "--decode", "auto")
    assert procs.finish(proc) == 0, procs.output(proc)
    assert counts(r, "hw")["produced"] == 12
    assert r.hget(keys.stream("hw"), "decode") == b"cpu"
    assert "NVDEC (h264_cuvid/hevc_cuvid) not available: decoding on the CPU" in procs.output(proc)
    proc = procs.rtai("producer", "--source", str(clip), "--stream", "hw2", "--decode", "nvdec")
    assert procs.finish(proc) == EXIT_SOURCE, procs.output(proc)
    assert b"with NVDEC" in r.hget(keys.stream("hw2"), "reason")
