"""Sources as real cameras send them (issue 20): H.265/HEVC end to end through a worker, and a 4K
frame resized to the inference size before anything else (files made with FFmpeg's libx265 and
libx264, as a camera's recording would be)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common import keys
from common.images import decode_frame
from common.wire import decode_batch, decode_result

from ..helpers import wait_for
from .fleet import counts

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (scripts/install_system_deps.sh)"),
]


def _ffmpeg_clip(path: Path, *, size: str, codec: str, seconds: float, fps: int = 15, gop: int | None = None) -> Path:
    """The demo's shapes would need the clip; FFmpeg's testsrc2 is a real encoder's real stream."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}", "-t", str(seconds),
         "-c:v", codec, "-preset", "ultrafast", "-pix_fmt", "yuv420p", *(["-g", str(gop)] if gop else []),
         str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def _codec(path: Path) -> str:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height",
         "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture(scope="module")
def hevc_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 720p H.265 recording for both decoders (libx265 takes seconds to make it)."""
    clip = _ffmpeg_clip(tmp_path_factory.mktemp("hevc") / "cam.mp4", size="1280x720", codec="libx265", seconds=2)
    assert _codec(clip) == "hevc,1280,720"
    return clip


@pytest.mark.parametrize("decode", ["cpu", "pyav"])
def test_an_h265_camera_recording_is_detected_end_to_end(r, procs, hevc_clip, decode):
    clip = hevc_clip
    procs.rtai("worker", "--threads", "1")
    producer = procs.rtai(
        "producer", "--source", str(clip), "--stream", "hevc", "--max-fps", "15", "--batch-size", "2",
        "--decode", decode,
    )  # fmt: skip
    assert procs.finish(producer, timeout=120) == 0, procs.output(producer)
    c = wait_for(lambda: (c := counts(r, "hevc"))["in_flight"] == 0 and c, timeout=60, what="every frame settled")
    assert c["produced"] >= 25 and c["failed"] == 0 and c["published"] > 0, c
    _id, fields = r.xrevrange(keys.history("hevc"), count=1)[0]
    result = decode_result(fields[b"r"])
    assert (result.w, result.h) == (1280, 720)


@pytest.mark.parametrize("decode", ["cpu", "pyav"])
def test_a_4k_frame_is_resized_to_the_inference_size_before_it_is_queued(r, procs, tmp_path, decode):
    clip = _ffmpeg_clip(tmp_path / "4k.mp4", size="3840x2160", codec="libx264", seconds=1, fps=5)
    producer = procs.rtai(
        "producer", "--source", str(clip), "--stream", "uhd", "--imgsz", "640", "--max-fps", "30",
        "--batch-size", "1", "--no-credit-flow", "--decode", decode,
    )  # fmt: skip
    assert procs.finish(producer, timeout=120) == 0, procs.output(producer)
    blobs = [decode_batch(r.get(k)) for k in r.keys(keys.batch_blob("uhd", "*"))]
    assert len(blobs) == 5
    frame = blobs[0].frames[0]
    assert (frame.w, frame.h, frame.dw, frame.dh) == (3840, 2160, 640, 360)
    assert decode_frame(frame).shape == (360, 640, 3)
    assert len(frame.data) < 200_000  # a 640x360 JPEG, not a 4K picture


@pytest.mark.parametrize("gop", [5, 10])
def test_keyframes_decode_hands_on_only_keyframes_at_once(r, procs, tmp_path, gop):
    """--decode keyframes: a 2 s, 15 fps file with a keyframe every `gop` frames gives exactly its
    keyframes (at the camera's size, boxes in its pixels), each as soon as it is read."""
    clip = _ffmpeg_clip(tmp_path / f"gop{gop}.mp4", size="1280x720", codec="libx264", seconds=2, gop=gop)
    producer = procs.rtai(
        "producer", "--source", str(clip), "--stream", f"key{gop}", "--imgsz", "320", "--max-fps", "15",
        "--batch-size", "1", "--no-credit-flow", "--decode", "keyframes",
    )  # fmt: skip
    assert procs.finish(producer, timeout=120) == 0, procs.output(producer)
    blobs = sorted((decode_batch(r.get(k)) for k in r.keys(keys.batch_blob(f"key{gop}", "*"))), key=lambda b: b.batch)
    assert len(blobs) == 30 // gop, [b.batch for b in blobs]
    frame = blobs[0].frames[0]
    assert (frame.w, frame.h, frame.dw, frame.dh) == (1280, 720, 320, 180)
    assert r.hget(keys.stream(f"key{gop}"), "decode") == b"keyframes"
    gaps = [b.frames[0].t_capture - a.frames[0].t_capture for a, b in zip(blobs, blobs[1:], strict=False)]
    assert all(abs(g - gop / 15) < 0.2 for g in gaps), gaps  # paced as the file plays: one per GOP


def test_vaapi_falls_back_to_the_cpu_where_there_is_none_and_says_so(r, procs, tmp_path):
    clip = _ffmpeg_clip(tmp_path / "cam.mp4", size="640x360", codec="libx264", seconds=1)
    producer = procs.rtai(
        "producer", "--source", str(clip), "--stream", "va", "--max-fps", "15", "--batch-size", "1",
        "--no-credit-flow", "--decode", "vaapi",
    )  # fmt: skip
    assert procs.finish(producer, timeout=120) == 0, procs.output(producer)
    assert "VAAPI not available" in procs.output(producer) and "decoding on the CPU" in procs.output(producer)
    assert r.hget(keys.stream("va"), "decode") == b"pyav"
    assert len(r.keys(keys.batch_blob("va", "*"))) == 15
