"""The tensor path and exported engines against Ultralytics' predictor, and the engine cache's rules."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from common.config import DEMO_CLIP
from devkit import synth
from worker import engine_cache
from worker.engines import ENGINES, TensorDetector, YoloDetector, build

MODEL = "rtai-shapes"
IMGSZ = 320
BATCH = 8
CONF = 0.25


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights dir holding rtai-shapes exported to ONNX once per session (imgsz 320, batch 8)."""
    root = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RTAI_WEIGHTS_DIR", str(root))
        path, built = engine_cache.export(MODEL, "onnx", half=False, batch=BATCH, imgsz=IMGSZ)
    assert built and path.parent == root / "engines"
    return root


@pytest.fixture
def weights(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the exported weights dir, set as RTAI_WEIGHTS_DIR (tests may damage it)."""
    root = tmp_path / "weights"
    shutil.copytree(exported, root)
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(root))
    yield root


@pytest.fixture(scope="session")
def reference() -> YoloDetector:
    return YoloDetector(MODEL, warmup_imgsz=IMGSZ)


def clip_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert frames
    return frames


def scene_frames(n: int, w: int = 640, h: int = 480) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [synth.render_scene(rng, width=w, height=h)[0] for _ in range(n)]


def as_jpeg(frames: list[np.ndarray]) -> tuple[list[bytes], list[np.ndarray]]:
    """JPEG bytes, and the same bytes decoded by OpenCV (what the worker's decode pool hands every engine)."""
    data = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
    return data, [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in data]


def assert_same_boxes(ref: list[np.ndarray], got: list[np.ndarray], min_iou: float = 0.99) -> None:
    assert len(ref) == len(got)
    assert sum(len(b) for b in ref) > 0, "the reference found nothing: the comparison would be empty"
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        assert len(a) == len(b), f"frame {i}: {len(a)} boxes from Ultralytics, {len(b)} from the engine"
        if not len(a):
            continue
        iou = box_iou(torch.from_numpy(a[:, :4]), torch.from_numpy(b[:, :4]))
        best = iou.argmax(1).numpy()
        assert (a[:, 5] == b[best, 5]).all(), f"frame {i}: classes differ"
        assert float(iou.max(1).values.min()) >= min_iou, f"frame {i}: IoU {iou.max(1).values.min():.4f}"


@pytest.mark.parametrize("engine", ["torch", "onnx"])
@pytest.mark.parametrize("source", ["clip", "scene640x480"])
def test_tensor_path_matches_ultralytics(engine, source, weights, reference, caplog):
    frames = clip_frames(8) if source == "clip" else scene_frames(8)
    _, decoded = as_jpeg(frames)
    ref = reference.predict(decoded, conf=CONF, imgsz=IMGSZ)
    with caplog.at_level(logging.INFO, logger="worker.engines"):
        det = build(MODEL, device="cpu", half=None, engine=engine, engine_batch=BATCH)
    assert det.engine_name(IMGSZ) == engine
    assert_same_boxes(ref, det.predict(decoded, conf=CONF, imgsz=IMGSZ))
    if engine == "onnx":
        assert "using onnx engine" in caplog.text


def test_mixed_sizes_and_partial_batch(weights, reference):
    """Frames of different sizes (square canvas) and a batch smaller than the engine's."""
    frames = [*scene_frames(2), *clip_frames(1)]
    det = TensorDetector(MODEL, backend="onnx", engine_batch=BATCH)
    assert_same_boxes(reference.predict(frames, conf=CONF, imgsz=IMGSZ), det.predict(frames, conf=CONF, imgsz=IMGSZ))


@pytest.mark.rtsp
def test_tensor_path_matches_ultralytics_on_rtsp_pattern(rtsp_pattern, weights, reference):
    cap = cv2.VideoCapture(rtsp_pattern, cv2.CAP_FFMPEG)
    frames = []
    while len(frames) < 4:
        ok, img = cap.read()
        assert ok, "no frame from the RTSP pattern"
        frames.append(img)
    cap.release()
    frames += scene_frames(2)  # the test pattern alone may hold no shape at all
    _, decoded = as_jpeg(frames)
    det = TensorDetector(MODEL, backend="onnx", engine_batch=BATCH)
    assert_same_boxes(reference.predict(decoded, conf=CONF, imgsz=IMGSZ), det.predict(decoded, conf=CONF, imgsz=IMGSZ))


def test_export_is_idempotent(weights):
    path, _ = engine_cache.lookup(
        engine_cache.device_key(MODEL, "onnx", half=False, batch=BATCH, imgsz=IMGSZ, device="cpu")
    )
    assert path is not None
    manifest, mtime = (weights / "engines" / "manifest.json").read_text(), path.stat().st_mtime_ns
    again, built = engine_cache.export(MODEL, "onnx", half=False, batch=BATCH, imgsz=IMGSZ)
    assert (again, built) == (path, False)
    assert path.stat().st_mtime_ns == mtime
    assert (weights / "engines" / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in (weights / "engines").iterdir()) == ["manifest.json", path.name]


def test_key_that_does_not_match_is_not_used(weights, caplog):
    key = engine_cache.device_key(MODEL, "onnx", half=False, batch=BATCH, imgsz=IMGSZ, device="cpu")
    assert engine_cache.lookup(key)[0] is not None
    for other in (
        engine_cache.device_key(MODEL, "onnx", half=False, batch=BATCH, imgsz=640, device="cpu"),
        engine_cache.device_key(MODEL, "onnx", half=False, batch=4, imgsz=IMGSZ, device="cpu"),
    ):
        path, why = engine_cache.lookup(other)
        assert path is None and key.filename in why  # says what is cached instead
    # A TensorRT engine built on another GPU (arch) or TensorRT version is never used here.
    built = weights / "fake.engine"
    built.write_bytes(b"engine for sm80")
    sm80 = engine_cache.EngineKey(MODEL, "engine", "fp16", BATCH, IMGSZ, arch="sm80", trt="10.3.0")
    engine_cache.record(sm80, built)
    assert engine_cache.lookup(sm80)[0] is not None
    for other in (
        engine_cache.EngineKey(MODEL, "engine", "fp16", BATCH, IMGSZ, arch="sm90", trt="10.3.0"),
        engine_cache.EngineKey(MODEL, "engine", "fp16", BATCH, IMGSZ, arch="sm80", trt="10.4.0"),
    ):
        assert engine_cache.lookup(other)[0] is None
    # A worker asking for imgsz 640 gets the PyTorch weights and a line saying why.
    with caplog.at_level(logging.WARNING, logger="worker.engines"):
        det = TensorDetector(MODEL, backend="onnx", engine_batch=BATCH, warmup_imgsz=640)
    assert det.engine_name(640) == "torch" and det.engine_name(IMGSZ) == "onnx"
    assert "no usable onnx engine, using the PyTorch weights instead" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbage_in_manifest"])
def test_corrupt_engine_falls_back_and_says_so(damage, weights, reference, caplog):
    key = engine_cache.device_key(MODEL, "onnx", half=False, batch=BATCH, imgsz=IMGSZ, device="cpu")
    path = weights / "engines" / key.filename
    if damage == "truncated":  # the manifest's SHA-256 no longer matches
        path.write_bytes(path.read_bytes()[:1000])
        expect = "corrupt or stale"
    else:  # the manifest agrees, but the file is not an ONNX model: ONNX Runtime refuses it
        path.write_bytes(b"not a protobuf" * 100)
        manifest_path = weights / "engines" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest[key.filename].update(sha256=engine_cache.sha256(path), size=path.stat().st_size)
        manifest_path.write_text(json.dumps(manifest))
        expect = "ONNX Runtime cannot load"
    frames = clip_frames(4)
    with caplog.at_level(logging.WARNING, logger="worker.engines"):
        det = build(MODEL, device="cpu", half=None, engine="onnx", engine_batch=BATCH)
        boxes = det.predict(frames, conf=CONF, imgsz=IMGSZ)
    assert det.engine_name(IMGSZ) == "torch"
    assert "using the PyTorch weights instead" in caplog.text and expect in caplog.text
    assert_same_boxes(reference.predict(frames, conf=CONF, imgsz=IMGSZ), boxes)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worker.engines"):  # auto: Ultralytics' predictor instead
        det = build(MODEL, device="cpu", half=None, engine="auto", engine_batch=BATCH)
        boxes = det.predict(frames, conf=CONF, imgsz=IMGSZ)
    assert det.engine_name(IMGSZ) == "ultralytics"
    assert "using Ultralytics' predictor instead" in caplog.text and expect in caplog.text
    assert_same_boxes(reference.predict(frames, conf=CONF, imgsz=IMGSZ), boxes)


def test_auto_runs_onnx_where_exported_and_ultralytics_elsewhere(weights, reference, caplog):
    """auto on the CPU: the cached ONNX export at its imgsz (logged with its file), Ultralytics'
    predictor at an imgsz with no export (the tensor path on PyTorch measured no faster than it);
    the same boxes either way, from the frames the worker decodes."""
    frames = scene_frames(4)
    _, decoded = as_jpeg(frames)
    with caplog.at_level(logging.INFO, logger="worker.engines"):
        det = build(MODEL, device="cpu", half=None, engine="auto", engine_batch=BATCH)
        assert det.engine_name(IMGSZ) == "onnx" and det.engine_name(640) == "ultralytics"
    assert "using onnx engine" in caplog.text and "rtai-shapes-onnx-fp32-b8-320.onnx" in caplog.text
    assert "imgsz 640: no usable onnx engine, using Ultralytics' predictor instead" in caplog.text
    for imgsz in (IMGSZ, 640):
        ref = reference.predict(decoded, conf=CONF, imgsz=imgsz)
        assert_same_boxes(ref, det.predict(decoded, conf=CONF, imgsz=imgsz))


def test_auto_without_export_is_ultralytics_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="worker.engines"):
        det = build(MODEL, device="cpu", half=None, engine="auto", engine_batch=BATCH)
    assert isinstance(det, YoloDetector)
    assert f"no onnx engine exported in {tmp_path / 'engines'}" in caplog.text
    assert (
        "rtai models export rtai-shapes --format onnx" in caplog.text and "using Ultralytics' predictor" in caplog.text
    )


def test_engine_names_a_model_not_a_path(weights):
    from common.errors import ModelError  # noqa: PLC0415

    with pytest.raises(ModelError, match="not a model name"):
        engine_cache.device_key("../../etc/passwd.pt", "onnx", half=False, batch=1, imgsz=320, device="cpu")
    with pytest.raises(ModelError, match="no CUDA device|GPU it will run on"):
        engine_cache.export(MODEL, "engine", half=True, batch=1, imgsz=320, device="cpu")


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_cuda_tensor_path_fp16_matches_ultralytics():
    frames = scene_frames(8)
    _, decoded = as_jpeg(frames)
    ref = YoloDetector(MODEL, device="cuda:0", half=True).predict(decoded, conf=CONF, imgsz=IMGSZ)
    det = TensorDetector(MODEL, device="cuda:0", backend="torch")
    assert det.half and det._side is not None  # FP16, pinned copies on a side stream
    assert_same_boxes(ref, det.predict(decoded, conf=CONF, imgsz=IMGSZ), min_iou=0.95)


@pytest.mark.gpu
@cuda
def test_cuda_tensorrt_engine_export_and_use(tmp_path, monkeypatch):
    pytest.importorskip("tensorrt", reason="needs TensorRT")
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(tmp_path))
    path, built = engine_cache.export(MODEL, "engine", half=True, batch=4, imgsz=IMGSZ, device="cuda:0")
    assert built and engine_cache.export(MODEL, "engine", half=True, batch=4, imgsz=IMGSZ, device="cuda:0")[1] is False
    frames = scene_frames(6)  # more than one engine batch, the second one partial
    ref = YoloDetector(MODEL, device="cuda:0", half=True).predict(frames, conf=CONF, imgsz=IMGSZ)
    det = build(MODEL, device="cuda:0", half=True, engine="auto", engine_batch=4)
    assert det.engine_name(IMGSZ) == "tensorrt"
    assert_same_boxes(ref, det.predict(frames, conf=CONF, imgsz=IMGSZ), min_iou=0.95)


def test_build_knows_every_engine_and_refuses_others():
    """The registry names every backend module's engine; an unknown name is refused, saying the choices."""
    import typing  # noqa: PLC0415

    from common.config import WorkerSettings  # noqa: PLC0415

    assert set(ENGINES) == {"auto", "torch", "tensor", "onnx", "tensorrt", "ultralytics"}
    assert set(typing.get_args(WorkerSettings.model_fields["engine"].annotation)) == set(ENGINES)
    with pytest.raises(ValueError, match="unknown engine 'openvino': use one of auto, torch"):
        build(MODEL, device="cpu", half=None, engine="openvino")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_worker_uses_the_cached_onnx_engine_and_says_so(r, procs, weights):
    """A real `rtai worker` (engine auto, CPU) finds the ONNX export in RTAI_WEIGHTS_DIR, logs it,
    and publishes every frame of a batch detected through it."""
    from common import keys  # noqa: PLC0415
    from tests.integration.fleet import counts, frames, sink  # noqa: PLC0415

    from ..helpers import wait_for  # noqa: PLC0415

    # -v: the engine line is INFO (what runs is in the worker's heartbeat, for `rtai status`).
    proc = procs.rtai("-v", "worker", "--name", "w-onnx", "--threads", "1", env={"RTAI_WEIGHTS_DIR": str(weights)})
    wait_for(lambda: "using onnx engine" in procs.output(proc), timeout=60, what="the worker's engine line")
    s = sink(r, "onnx-cam", imgsz=IMGSZ, model=MODEL)
    s.push(frames(4, size=(320, 240)))
    wait_for(lambda: counts(r, "onnx-cam")["published"] == 4, timeout=30, what="results through ONNX Runtime")
    engines = wait_for(
        lambda: (r.hget(keys.worker("w-onnx"), "engines") or b"").decode(), timeout=10, what="engines in the heartbeat"
    )
    assert engines == f"{MODEL}@{IMGSZ}=onnx", engines
    assert int(r.hget(keys.worker("w-onnx"), "torch_threads")) == 1, "ONNX Runtime's intra-op threads, as set"
    proc.terminate()
    assert procs.finish(proc) == 0, procs.output(proc)
    assert "rtai-shapes-onnx-fp32-b8-320.onnx" in procs.output(proc)


def test_gpu_check_script_parses():
    """scripts/gpu_check.sh runs only on a GPU host: here at least it must be valid bash."""
    import subprocess  # noqa: PLC0415

    script = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 0, done.stderr


def test_models_export_command_reuses_the_cached_file(weights):
    from click.testing import CliRunner  # noqa: PLC0415

    from control.cli import cli  # noqa: PLC0415

    args = ["models", "export", MODEL, "--format", "onnx", "--imgsz", str(IMGSZ), "--batch", str(BATCH)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{MODEL}: cached {weights / 'engines' / 'rtai-shapes-onnx-fp32-b8-320.onnx'}"
    result = CliRunner().invoke(cli, ["models", "export", "../x.pt", "--format", "onnx"])
    assert result.exit_code != 0 and "not a model name" in result.output


def test_gpus_lists_the_export_a_default_worker_uses(weights):
    """`rtai gpus` looks for the export at the batch a default worker looks for (`--engine-batch`,
    `rtai models export --batch`: 8), not at the producers' batch size."""
    from control.gpus import engine_rows  # noqa: PLC0415

    rows = {row["engine"]: row for row in engine_rows(MODEL, "cpu", [], imgsz=IMGSZ, bench=False)}
    assert rows["onnx"]["available"], rows["onnx"]
    assert rows["onnx"]["path"].endswith("rtai-shapes-onnx-fp32-b8-320.onnx")
