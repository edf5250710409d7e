"""The guide's MultiGPUYOLOv11Detector with the real model: two CPU replicas stand in for two GPUs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from common.errors import ConfigError, GpuError, ModelError, SchemaError
from devkit.synth import render_scene
from realtime_ai.detector import DetectorType, FailoverStrategy, MultiGPUYOLOv11Detector
from worker import models

from ..metrics import match

CPU_PAIR = {"variant": "rtai-shapes", "gpu_devices": ["cpu", "cpu"], "imgsz": 320}


def scenes(seed: int, n: int) -> tuple[list[np.ndarray], list[list[tuple]]]:
    rng = np.random.default_rng(seed)
    images, truths = [], []
    for _ in range(n):
        img, boxes = render_scene(rng)
        images.append(img)
        truths.append(boxes)
    return images, truths


def recall(results: list[dict], truths: list[list[tuple]]) -> float:
    tp = fn = 0
    for res, truth in zip(results, truths, strict=True):
        pred = [(int(b[5]), b[:4]) for b in res["boxes"]]
        t, _, f = match(pred, [(c, b) for c, *b in truth], 0.5)
        tp, fn = tp + t, fn + f
    return tp / (tp + fn)


@pytest.fixture(scope="module")
def loaded() -> Iterator[MultiGPUYOLOv11Detector]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    det = MultiGPUYOLOv11Detector(CPU_PAIR)
    asyncio.run(det.load_model())
    yield det
    torch.set_num_threads(threads)


@pytest.fixture
def det(loaded: MultiGPUYOLOv11Detector) -> Iterator[MultiGPUYOLOv11Detector]:
    models_, config = [r.detector.model for r in loaded.replicas], loaded.config
    yield loaded
    loaded.config = config
    for r, model in zip(loaded.replicas, models_, strict=True):
        r.detector.model = model  # undo any injected fault
        loaded.mark_healthy(r.name)
    loaded.enable_failover = True
    loaded.failover_strategy = FailoverStrategy.LEAST_LOADED
    loaded.reset_stats()


def break_replica(det: MultiGPUYOLOv11Detector, name: str) -> None:
    """Tear the replica's model down, as a lost device would: its predict now raises for real."""
    next(r for r in det.replicas if r.name == name).detector.model = None


def test_detections_match_ground_truth(det):
    images, truths = scenes(11, 12)

    async def run() -> list[dict]:
        batches = await asyncio.gather(
            *(det.detect_batch(images[i : i + 4], frame_ids=list(range(i, i + 4))) for i in range(0, 12, 4))
        )
        return [r for batch in batches for r in batch]

    results = asyncio.run(run())
    assert [r["frame_id"] for r in results] == list(range(12))
    assert recall(results, truths) >= 0.8
    first = results[0]
    assert first["stream_id"] == "default" and first["device"] == "cpu" and first["latency_ms"] > 0
    assert first["labels"] == [det.names[int(b[5])] for b in first["boxes"]]
    assert set(det.names) == {"circle", "square", "triangle"}


def test_concurrent_batches_spread_over_replicas(det):
    images, _ = scenes(12, 8)

    async def run() -> list[list[dict]]:
        return await asyncio.gather(
            *(det.detect_batch(images[i : i + 2], stream_ids=[f"cam{i}"] * 2) for i in range(0, 8, 2))
        )

    batches = asyncio.run(run())
    assert {b[0]["replica"] for b in batches} == {"replica0", "replica1"}
    stats = det.get_multi_gpu_stats()
    share = stats["load_distribution"]
    assert share["replica0"] > 0 and share["replica1"] > 0 and sum(share.values()) == pytest.approx(1.0)
    assert stats["total_frames"] == 8
    assert stats["gpu_utilization"] == {"cpu": None}
    for rep in stats["replicas"].values():
        assert rep["device"] == "cpu" and rep["healthy"] and rep["errors"] == 0
        assert rep["frames"] == 4 and rep["batches"] == 2 and rep["avg_latency_ms"] > 0


def test_round_robin_alternates(det):
    det.failover_strategy = FailoverStrategy.ROUND_ROBIN
    images, _ = scenes(13, 4)
    used = [asyncio.run(det.detect_batch([img]))[0]["replica"] for img in images]
    assert set(used) == {"replica0", "replica1"} and used == used[:2] * 2


def test_failover_to_the_other_replica(det):
    images, truths = scenes(14, 6)
    break_replica(det, "replica0")  # least-loaded picks replica0 first: the batch must fail over
    results = asyncio.run(det.detect_batch(images))
    assert {r["replica"] for r in results} == {"replica1"}
    assert recall(results, truths) >= 0.8
    stats = det.get_multi_gpu_stats()
    bad = stats["replicas"]["replica0"]
    assert not bad["healthy"] and bad["errors"] == 1 and "AttributeError" in bad["last_error"]
    assert stats["healthy_replicas"] == 1 and stats["failovers"] == 1
    assert stats["load_distribution"] == {"replica0": 0.0, "replica1": 1.0}
    # Later batches skip the unhealthy replica without trying it again.
    asyncio.run(det.detect_batch(images[:2]))
    assert det.get_multi_gpu_stats()["replicas"]["replica0"]["errors"] == 1


def test_probe_restores_a_repaired_replica(det):
    model = det.replicas[0].detector.model
    break_replica(det, "replica0")
    images, _ = scenes(15, 1)
    asyncio.run(det.detect_batch(images))
    assert asyncio.run(det.probe()) == []  # still broken
    det.replicas[0].detector.model = model
    assert asyncio.run(det.probe()) == ["replica0"]
    assert det.get_multi_gpu_stats()["healthy_replicas"] == 2


def test_every_replica_failing_raises_gpu_error(det):
    break_replica(det, "replica0")
    break_replica(det, "replica1")
    images, _ = scenes(16, 2)
    with pytest.raises(GpuError, match=r"no healthy replica.*replica0 \(cpu\): AttributeError.*replica1 \(cpu\)"):
        asyncio.run(det.detect_batch(images))
    assert det.get_multi_gpu_stats()["healthy_replicas"] == 0
    with pytest.raises(GpuError, match="no healthy replica left"):
        asyncio.run(det.detect_batch(images))  # nothing left to try


def test_without_failover_the_first_fault_is_raised(det):
    det.enable_failover = False
    break_replica(det, "replica0")
    images, _ = scenes(17, 1)
    with pytest.raises(GpuError, match="failover is disabled"):
        asyncio.run(det.detect_batch(images))
    assert det.get_multi_gpu_stats()["replicas"]["replica1"]["frames"] == 0


def test_max_retries_bounds_the_failover(det):
    det.config = det.config.model_copy(update={"max_retries": 0})
    break_replica(det, "replica0")
    images, _ = scenes(20, 1)
    with pytest.raises(GpuError, match=r"failed on replica0 and max_retries=0.*replica1 \(cpu\): healthy"):
        asyncio.run(det.detect_batch(images))


@pytest.mark.parametrize(
    "frames",
    [[np.zeros((32, 32), np.uint8)], [np.zeros((32, 32, 3), np.float32)], ["not an image"]],
)
def test_bad_frames_are_refused_without_blaming_a_replica(det, frames):
    with pytest.raises(SchemaError, match="frame 0"):
        asyncio.run(det.detect_batch(frames))
    assert det.get_multi_gpu_stats()["healthy_replicas"] == 2


def test_ids_must_match_frames(det):
    images, _ = scenes(18, 2)
    with pytest.raises(SchemaError, match="2 frames but 1 frame_ids"):
        asyncio.run(det.detect_batch(images, frame_ids=[7]))
    assert asyncio.run(det.detect_batch([])) == []


def test_detect_before_load_is_an_error():
    with pytest.raises(ModelError, match="load_model"):
        asyncio.run(MultiGPUYOLOv11Detector(CPU_PAIR).detect_batch([np.zeros((8, 8, 3), np.uint8)]))


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"gpu_device": [0]}, "gpu_device"),
        ({"failover_strategy": "fastest"}, "failover_strategy"),
        ({"gpu_devices": ["tpu:0"]}, "gpu_devices"),
        ({"gpu_devices": []}, "gpu_devices"),
        ({"confidence_threshold": 1.5}, "confidence_threshold"),
        ({"imgsz": 8}, "imgsz"),
        ({"max_retries": -1}, "max_retries"),
        ({"half_precision": "maybe"}, "half_precision"),
        ({"model_type": "multi_gpu_yolov11n", "variant": "rtai-shapes"}, "model_type"),
    ],
)
def test_bad_config_names_the_key(config, key):
    with pytest.raises(ConfigError, match=key):
        MultiGPUYOLOv11Detector(config)


def test_config_defaults_and_device_names():
    cfg = MultiGPUYOLOv11Detector(
        {"model_type": DetectorType.MULTI_GPU_YOLOV11_SMALL, "gpu_devices": [1, "cuda", "CPU", "cuda:2"]}
    ).config
    assert cfg.model == "multi_gpu_yolov11s" and cfg.imgsz == 640 and cfg.confidence_threshold == 0.25
    assert cfg.half_precision and cfg.enable_failover and cfg.failover_strategy is FailoverStrategy.LEAST_LOADED
    assert MultiGPUYOLOv11Detector({}).config.model == "rtai-shapes"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_gpu_error():
    with pytest.raises(GpuError, match="cuda:0 is not available"):
        MultiGPUYOLOv11Detector({"gpu_devices": [0]}).devices()
    assert MultiGPUYOLOv11Detector({}).devices() == ["cpu"]


def test_detector_type_values():
    assert [t.value for t in DetectorType] == [f"multi_gpu_yolov11{s}" for s in "nsmlx"]
    assert DetectorType.MULTI_GPU_YOLOV11_NANO == "multi_gpu_yolov11n"
    assert DetectorType("multi_gpu_yolov11x") is DetectorType.MULTI_GPU_YOLOV11_XLARGE
    assert [models.canonical(t.value) for t in DetectorType] == [f"yolo11{s}.pt" for s in "nsmlx"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_gpu_gets_a_replica_in_fp16():
    det = MultiGPUYOLOv11Detector({"variant": "rtai-shapes", "imgsz": 320})
    asyncio.run(det.load_model())
    assert [r.device for r in det.replicas] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert all(r.detector.half for r in det.replicas)
    images, truths = scenes(19, 16)

    async def run() -> list[dict]:
        batches = await asyncio.gather(*(det.detect_batch(images[i : i + 4]) for i in range(0, 16, 4)))
        return [r for batch in batches for r in batch]

    results = asyncio.run(run())
    assert recall(results, truths) >= 0.8
    stats = det.get_multi_gpu_stats()
    assert all(v is None or 0 <= v <= 100 for v in stats["gpu_utilization"].values())
    assert all(share > 0 for share in stats["load_distribution"].values())
