"""`rtai gpus`: the report on this (GPU-less) machine, and the pure strategy choice."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from click.testing import CliRunner

from common import gpu
from control.cli import cli
from control.gpus import CUDA_CONTEXT_MB, estimate_model_mb, recommend
from worker.models import OWN_WEIGHTS

no_gpu = pytest.mark.skipif(gpu.count() > 0 or torch.cuda.is_available(), reason="checks the GPU-less report")


def card(name: str = "NVIDIA A100-SXM4-80GB", memory_mb: int = 81920) -> dict:
    return {"name": name, "memory_total_mb": memory_mb}


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, ["gpus", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@no_gpu
def test_json_report_without_gpu_benchmarks_the_cpu(one_thread):
    report = json.loads(invoke("--json", "--frames", "8"))  # stdout is one JSON object, nothing else
    assert report["gpu_count"] == 0 and report["gpus"] == [] and not report["cuda_available"]
    assert "No NVIDIA GPU found" in report["message"] and "1 torch threads" in report["message"]
    assert report["strategy"]["name"] == "cpu" and "CPU" in report["strategy"]["reason"]
    assert report["model"]["weights"] == str(OWN_WEIGHTS)
    [bench] = report["benchmark"]
    assert bench["device"] == "cpu" and bench["precision"] == "fp32" and bench["torch_threads"] == 1
    assert bench["frames"] == 8 and bench["fps"] > 0 and bench["ms_per_frame"] > 0
    rows = {row["engine"]: row for row in report["engines"]["cpu"]}  # which engines exist, and their speed
    assert set(rows) == {"ultralytics", "torch", "onnx"}
    assert rows["ultralytics"]["fps"] > 0 and rows["torch"]["fps"] > 0
    assert rows["onnx"]["fps"] > 0 if rows["onnx"]["available"] else "no onnx engine" in rows["onnx"]["reason"]


@no_gpu
def test_text_report_without_benchmark():
    out = invoke("--no-bench")
    assert out.startswith("No NVIDIA GPU found: benchmarking the CPU with")
    assert "Recommended strategy: cpu: No GPU is visible" in out
    assert "frames/s" not in out


def test_missing_model_skips_the_benchmark_and_says_why(tmp_path):
    report = json.loads(invoke("--json", "--variant", str(tmp_path / "nope.pt")))
    assert "does not exist" in report["model"]["error"] and "does not exist" in report["benchmark_skipped"]
    assert report["benchmark"] == []


def test_listed_in_rtai_help():
    out = CliRunner().invoke(cli, ["--help"]).stdout
    assert "gpus" in out and "gpu_test.py" in out


def test_strategy_without_gpu_is_cpu():
    assert recommend([]).name == "cpu"
    assert recommend([], model_mb=10**6).name == "cpu"


def test_strategy_for_one_gpu_is_single():
    s = recommend([card()], model_mb=600)
    assert s.name == "single" and "A100" in s.reason


def test_strategy_for_alike_gpus_is_data_parallel():
    assert recommend([card(), card()], model_mb=600).name == "data-parallel"
    assert recommend([card()] * 4).name == "data-parallel"


def test_strategy_for_many_alike_gpus_is_load_balancing():
    assert recommend([card()] * 8).name == "load-balancing"


def test_strategy_for_mixed_gpus_is_load_balancing():
    s = recommend([card(), card("NVIDIA GeForce RTX 4090", 24564)], model_mb=600)
    assert s.name == "load-balancing" and "2 kinds" in s.reason and "RTX 4090" in s.reason


def test_strategy_for_a_model_bigger_than_a_card_is_multi_gpu_worker():
    s = recommend([card("NVIDIA T4", 15360), card("NVIDIA T4", 15360)], model_mb=20000)
    assert s.name == "multi-GPU worker" and "20000 MB" in s.reason and "15360 MB" in s.reason
    single = recommend([card("NVIDIA T4", 15360)], model_mb=20000)
    assert single.name == "multi-GPU worker" and "smaller variant" in single.reason
    assert recommend([card("NVIDIA T4", 15360)] * 2, model_mb=15000).name == "data-parallel"


def test_model_memory_estimate():
    assert estimate_model_mb(str(OWN_WEIGHTS)) > CUDA_CONTEXT_MB
    assert estimate_model_mb("yolo11n.yaml") is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_report_benchmarks_fp32_and_fp16():
    report = json.loads(invoke("--json", "--frames", "16"))
    assert report["gpu_count"] >= 1 and report["driver_version"]
    assert all(g["memory_total_mb"] and g["compute_capability"] for g in report["gpus"])
    assert report["strategy"]["name"] != "cpu"
    precisions = {(b["device"], b["precision"]) for b in report["benchmark"]}
    assert ("cuda:0", "fp32") in precisions and ("cuda:0", "fp16") in precisions
    assert all(b.get("fps", 0) > 0 for b in report["benchmark"])
