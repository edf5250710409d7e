"""The guide's Python API to the letter: its snippets run as written apart from the import line
(`from app.realtime_ai import ...` -> `from realtime_ai import ...`) and a local model (the stock
yolo11s/m names resolve to copies of the bundled model in RTAI_WEIGHTS_DIR: nothing downloads), and
every key the guide documents changes what the detector does."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from common import models as names
from common.errors import ConfigError, GpuError
from common.stream_settings import stream_hash
from devkit.synth import render_scene
from realtime_ai import detector as detector_module
from realtime_ai.detector import MultiGPUYOLOv11Detector as Detector

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def stock_names_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for file in ("yolo11s.pt", "yolo11m.pt"):
        shutil.copy(names.OWN_WEIGHTS, tmp_path / file)
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(tmp_path))


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def guide_frames(n: int = 4) -> tuple[list[np.ndarray], list[int], list[str]]:
    rng = np.random.default_rng(9)
    frames = [render_scene(rng)[0] for _ in range(n)]
    return frames, list(range(n)), [f"camera_{i % 2}" for i in range(n)]


@pytest.mark.usefixtures("stock_names_are_local", "one_thread")
def test_the_guides_snippet_runs_as_written():
    frames, frame_ids, stream_ids = guide_frames()

    async def guide() -> tuple[list, dict]:
        # --- the guide's snippet, verbatim but for the import line ------------------------------------
        from realtime_ai import DetectorType, MultiGPUYOLOv11Detector  # noqa: PLC0415

        config = {
            "variant": DetectorType.MULTI_GPU_YOLOV11_SMALL,
            "enable_multi_gpu": True,
            "load_balancing": True,
            "gpu_devices": None,  # Use all available GPUs
            "confidence_threshold": 0.5,
            "max_workers": 4,
        }
        detector = MultiGPUYOLOv11Detector(config)
        await detector.load_model()
        results = await detector.detect_batch(frames, frame_ids, stream_ids)
        stats = detector.get_multi_gpu_stats()
        print(f"GPU utilization: {stats['gpu_utilization']}")
        print(f"Load distribution: {stats['load_distribution']}")
        # ----------------------------------------------------------------------------------------------
        return results, stats

    results, stats = asyncio.run(guide())
    assert [r["frame_id"] for r in results] == frame_ids and [r["stream_id"] for r in results] == stream_ids
    assert any(r["boxes"] for r in results), "the local model found the shapes"
    assert all(b[4] >= 0.5 for r in results for b in r["boxes"]), "confidence_threshold applied"
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    assert set(stats["gpu_utilization"]) == set(devices)
    assert sum(stats["load_distribution"].values()) == pytest.approx(1.0)
    assert stats["model"] == "multi_gpu_yolov11s" and stats["max_workers"] == 4


@pytest.mark.usefixtures("stock_names_are_local", "one_thread")
def test_the_guides_advanced_block_runs_with_the_medium_model():
    frames, frame_ids, stream_ids = guide_frames(2)

    async def guide() -> dict:
        from realtime_ai import DetectorType, MultiGPUYOLOv11Detector  # noqa: PLC0415

        config = {
            "variant": DetectorType.MULTI_GPU_YOLOV11_MEDIUM,
            "enable_multi_gpu": True,
            "load_balancing": False,
            "gpu_devices": None,
            "parallel_streams": 4,
            "max_workers": 8,
            "half_precision": True,
            "mixed_precision": True,
            "amp_level": "O1",
            "confidence_threshold": 0.5,
        }
        detector = MultiGPUYOLOv11Detector(config)
        await detector.load_model()
        await detector.detect_batch(frames, frame_ids, stream_ids)
        best_gpu = detector.select_best_gpu_for_task(memory_requirement=2048)
        print(f"Best GPU: {best_gpu}")
        return detector.get_multi_gpu_stats()

    stats = asyncio.run(guide())
    assert stats["model"] == "multi_gpu_yolov11m" and stats["total_frames"] == 2
    assert stats["parallel_streams"] == 4 and stats["load_balancing"] is False


@pytest.fixture(scope="module")
def pair() -> Iterator[Detector]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = Detector({"variant": "rtai-shapes", "gpu_devices": ["cpu", "cpu"], "imgsz": 320})
    asyncio.run(det.load_model())
    yield det
    torch.set_num_threads(threads)


@pytest.fixture
def det(pair: Detector) -> Iterator[Detector]:
    config = pair.config
    pair.reset_stats()
    yield pair
    pair.config = config


def configure(det: Detector, **update: object) -> None:
    det.config = det.config.model_copy(update=update)


def run_batches(det: Detector, streams: list[list[object]]) -> list[list[dict]]:
    """One batch per entry, all at once; each batch has one frame per stream id given."""
    rng = np.random.default_rng(3)
    frames = [render_scene(rng)[0] for _ in range(max(len(s) for s in streams))]

    async def go() -> list[list[dict]]:
        return await asyncio.gather(*(det.detect_batch(frames[: len(s)], stream_ids=list(s)) for s in streams))

    return asyncio.run(go())


def test_enable_multi_gpu_false_loads_one_replica():
    det = Detector({"variant": "rtai-shapes", "gpu_devices": ["cpu", "cpu"], "enable_multi_gpu": False})
    assert det.devices() == ["cpu"]
    assert Detector({"gpu_devices": ["cpu", "cpu"]}).devices() == ["cpu", "cpu"]


def test_load_balancing_false_is_the_fixed_stream_map(det):
    configure(det, load_balancing=False)
    results = run_batches(det, [[0], [1], [2], [3], ["lobby"], ["door"]])
    for (res,) in results:
        sid = res["stream_id"]
        expected = sid % 2 if isinstance(sid, int) else stream_hash(sid) % 2
        assert res["replica"] == f"replica{expected}", sid
    mixed = run_batches(det, [[0, 1, 2, 3]])[0]
    assert [r["replica"] for r in mixed] == ["replica0", "replica1", "replica0", "replica1"], "split by stream"
    assert [r["stream_id"] for r in mixed] == [0, 1, 2, 3], "in the caller's order"


def test_load_balancing_false_still_fails_over(det):
    configure(det, load_balancing=False)
    det.mark_unhealthy("replica1", "test")
    try:
        (res,) = run_batches(det, [[1]])[0]
        assert res["replica"] == "replica0"
    finally:
        det.mark_healthy("replica1")


def test_max_workers_caps_batches_in_flight(det):
    configure(det, max_workers=1)
    run_batches(det, [["a"]] * 6)
    assert det.get_multi_gpu_stats()["peak_in_flight_batches"] == 1
    det.reset_stats()
    configure(det, max_workers=None)
    run_batches(det, [["a"]] * 6)
    assert det.get_multi_gpu_stats()["peak_in_flight_batches"] == 6, "all dispatched at once without a cap"


def test_parallel_streams_caps_distinct_streams_in_flight(det):
    configure(det, parallel_streams=1)
    results = run_batches(det, [["a"], ["b"], ["c"], ["a"]])
    assert det.get_multi_gpu_stats()["peak_parallel_streams"] == 1
    assert [res[0]["stream_id"] for res in results] == ["a", "b", "c", "a"]
    det.reset_stats()
    configure(det, parallel_streams=None)
    run_batches(det, [["a"], ["b"], ["c"], ["d"]])
    assert det.get_multi_gpu_stats()["peak_parallel_streams"] == 0, "not tracked without a cap"


@pytest.mark.parametrize(
    ("config", "half"),
    [
        ({}, True),
        ({"half_precision": False}, False),
        ({"mixed_precision": False}, False),
        ({"amp_level": "O0"}, False),
        ({"amp_level": "o2", "half_precision": False, "mixed_precision": True}, None),
        ({"amp_level": "O1", "mixed_precision": True}, True),
    ],
)
def test_precision_aliases(config, half):
    if half is None:
        with pytest.raises(ConfigError, match="disagree"):
            Detector(config)
    else:
        assert Detector(config).config.half_precision is half


def test_bad_amp_level_names_the_key():
    with pytest.raises(ConfigError, match="amp_level"):
        Detector({"amp_level": "O4"})


def test_engine_picks_the_fleet_workers_backend_with_the_same_boxes(one_thread):
    """The guide's class builds its replicas through worker.engines, as the fleet worker does."""
    from worker.engines import TensorDetector, YoloDetector  # noqa: PLC0415

    frames = [render_scene(np.random.default_rng(5))[0] for _ in range(2)]
    got = {}
    for engine, kind in (("ultralytics", YoloDetector), ("torch", TensorDetector)):
        det = Detector({"variant": "rtai-shapes", "gpu_devices": ["cpu"], "engine": engine, "imgsz": 320})

        async def run(det: Detector = det) -> list[dict]:
            await det.load_model()
            return await det.detect_batch(frames)

        results = asyncio.run(run())
        assert isinstance(det.replicas[0].detector, kind)
        got[engine] = [r["labels"] for r in results]
    assert got["torch"] == got["ultralytics"] and any(got["torch"])
    with pytest.raises(ConfigError, match="engine"):
        Detector({"engine": "openvino"})


def test_model_type_and_variant_are_both_accepted():
    assert Detector({"model_type": "multi_gpu_yolov11m"}).config.model == "multi_gpu_yolov11m"
    assert Detector({"variant": "multi_gpu_yolov11m"}).config.model == "multi_gpu_yolov11m"


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three GPUs with 1000, 6000 and 3000 MB free."""
    free = {0: 1000, 1: 6000, 2: 3000}
    monkeypatch.setattr(
        detector_module.gpu,
        "stats",
        lambda i: {"memory_used_mb": 8000 - free[i], "memory_total_mb": 8000} if i in free else {},
    )
    monkeypatch.setattr(detector_module.gpu, "count", lambda: 3)


@pytest.mark.usefixtures("fake_nvml")
def test_select_best_gpu_for_task_picks_the_most_free_memory_that_fits():
    det = Detector({})
    assert det.select_best_gpu_for_task(memory_requirement=2048) == 1
    assert det.select_best_gpu_for_task(memory_requirement=7000) is None
    assert Detector({"gpu_devices": [0, 2, "cpu"]}).select_best_gpu_for_task(memory_requirement=2048) == 2
    assert Detector({"gpu_devices": ["cpu"]}).select_best_gpu_for_task(memory_requirement=1) is None


@pytest.mark.usefixtures("fake_nvml")
def test_gpu_memory_mb_leaves_out_devices_without_the_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert Detector({"gpu_memory_mb": 2048}).devices() == ["cuda:1", "cuda:2"]
    assert Detector({"gpu_memory_mb": 2048, "gpu_devices": [0, "cpu"]}).devices() == ["cpu"], "CPU ignores it"
    with pytest.raises(GpuError, match="7000 MB free"):
        Detector({"gpu_memory_mb": 7000}).devices()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and NVML")
@pytest.mark.usefixtures("one_thread")
def test_real_nvml_memory_and_amp_alias_on_cuda():
    det = Detector({"variant": "rtai-shapes", "imgsz": 320, "mixed_precision": True, "gpu_memory_mb": 1})
    assert det.devices() == [f"cuda:{i}" for i in range(torch.cuda.device_count())], "every GPU has 1 MB free"
    assert det.select_best_gpu_for_task(memory_requirement=1) in range(torch.cuda.device_count())
    assert det.select_best_gpu_for_task(memory_requirement=16_000_000) is None, "no GPU has 16 TB free"
    asyncio.run(det.load_model())
    assert all(r.detector.half for r in det.replicas), "mixed_precision is FP16"
