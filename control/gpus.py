"""`rtai gpus`: the GPUs here, the strategy that suits them, and a short benchmark (the guide's gpu_test.py)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from common import gpu
from common.config import DEFAULT_BATCH_SIZE, DEFAULT_MODEL, DEMO_CLIP, WorkerSettings, apply_worker_thread_env
from common.errors import ModelError
from worker import models

log = logging.getLogger(__name__)

#: Inference holds the weights plus activations and cuDNN workspaces: 4x the weights file covers a
#: batch of a few 640 px frames with room to spare.
MODEL_MEMORY_FACTOR = 4
#: The CUDA context and caching allocator take about this much of each card before a model loads.
CUDA_CONTEXT_MB = 500
#: Lockstep data-parallel batches stay efficient up to about four cards; past that, independent
#: workers pulling the deepest queue scale better.
MAX_DATA_PARALLEL = 4
#: The exported batch a worker with default settings looks for (`--engine-batch`; `rtai models export`'s default).
ENGINE_BATCH = WorkerSettings.model_fields["engine_batch"].default


@dataclass(frozen=True)
class Strategy:
    name: str
    reason: str


def recommend(gpus: list[dict[str, Any]], *, model_mb: float | None = None) -> Strategy:
    """The strategy for these GPUs (dicts with `name` and `memory_total_mb`, as common.gpu.stats gives)."""
    n = len(gpus)
    if n == 0:
        return Strategy(
            "cpu",
            "No GPU is visible, so detection runs on the CPU: run `rtai worker --device cpu` (or `--workers N` "
            "to split the cores between processes) and keep imgsz small (320).",
        )
    largest = max((g.get("memory_total_mb") or 0 for g in gpus), default=0)
    if model_mb is not None and largest and model_mb > largest:
        extra = "" if n > 1 else "; this machine has one GPU, so choose a smaller variant"
        return Strategy(
            "multi-GPU worker",
            f"the model needs about {model_mb:.0f} MB, more than the largest card's {largest} MB: "
            f"split it over several GPUs in one multi-GPU worker{extra}.",
        )
    names = sorted({str(g.get("name")) for g in gpus})
    if n == 1:
        return Strategy("single", f"one GPU ({names[0]}): one worker on it (`rtai worker --device cuda:0`).")
    if len(names) > 1:
        return Strategy(
            "load-balancing",
            f"{n} GPUs of {len(names)} kinds ({', '.join(names)}): one worker per GPU pulling the deepest "
            "queue first, so faster cards take more batches (`rtai worker --all-gpus`).",
        )
    if n <= MAX_DATA_PARALLEL:
        return Strategy(
            "data-parallel",
            f"{n} alike GPUs ({names[0]}): one model replica per GPU and batches spread evenly over them "
            "(`rtai worker --all-gpus`, or MultiGPUYOLOv11Detector in one process).",
        )
    return Strategy(
        "load-balancing",
        f"{n} alike GPUs ({names[0]}): past {MAX_DATA_PARALLEL} cards, independent workers pulling the deepest "
        "queue scale better than lockstep data-parallel batches (`rtai worker --all-gpus`).",
    )


def estimate_model_mb(weights: str) -> float | None:
    """GPU memory a model needs for inference, from its weights file; None for an architecture YAML."""
    path = Path(weights)
    if path.suffix != ".pt" or not path.exists():
        return None
    return round(MODEL_MEMORY_FACTOR * path.stat().st_size / 2**20 + CUDA_CONTEXT_MB)


def gpu_specs() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-GPU specs (NVML) and the link between each pair of GPUs."""
    specs = []
    for i in range(gpu.count()):
        spec = gpu.stats(i)
        spec.update(gpu.pcie_link(i))
        spec["nvlink_active_links"] = gpu.nvlink_active(i)
        specs.append(spec)
    links = [{"a": a, "b": b, "link": gpu.topology(a, b)} for a in range(len(specs)) for b in range(a + 1, len(specs))]
    return specs, links


def bench_frames(n: int, imgsz: int) -> list[np.ndarray]:
    """`n` frames of the shipped demo clip (looped if it is shorter), resized to imgsz x imgsz*3/4."""
    import cv2  # noqa: PLC0415  (video decoding; only when benchmarking)

    size = (imgsz, imgsz * 3 // 4)
    clip: list[np.ndarray] = []
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    try:
        while len(clip) < n:
            ok, frame = cap.read()
            if not ok:
                break
            clip.append(cv2.resize(frame, size))
    finally:
        cap.release()
    if not clip:
        raise click.ClickException(f"cannot read the demo clip {DEMO_CLIP}")
    return [clip[i % len(clip)] for i in range(n)]


def benchmark(variant: str, device: str, frames: list[np.ndarray], *, imgsz: int, half: bool) -> dict[str, Any]:
    """Frames/s of `variant` on `device`, predicting `frames` in batches after one warm-up batch."""
    import torch  # noqa: PLC0415

    from worker.engines import YoloDetector  # noqa: PLC0415

    entry: dict[str, Any] = {"device": device, "precision": "fp16" if half else "fp32", "batch": DEFAULT_BATCH_SIZE}
    if device == "cpu":
        entry["torch_threads"] = torch.get_num_threads()
    try:
        det = YoloDetector(variant, device=device, half=half, warmup_imgsz=imgsz, allow_path=True)
        det.predict(frames[:DEFAULT_BATCH_SIZE], conf=0.25, imgsz=imgsz)
        t0 = time.perf_counter()
        for i in range(0, len(frames), DEFAULT_BATCH_SIZE):
            det.predict(frames[i : i + DEFAULT_BATCH_SIZE], conf=0.25, imgsz=imgsz)
        seconds = time.perf_counter() - t0
    except RuntimeError as exc:  # CUDA out of memory, a lost device
        return {**entry, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return {
        **entry,
        "frames": len(frames),
        "seconds": round(seconds, 3),
        "fps": round(len(frames) / seconds, 1),
        "ms_per_frame": round(1000 * seconds / len(frames), 2),
    }


def engine_rows(
    variant: str, device: str, frames: list[np.ndarray], *, imgsz: int, bench: bool
) -> list[dict[str, Any]]:
    """Which engines exist for `device` (Ultralytics' predictor and the tensor path always; an exported
    TensorRT engine on CUDA, ONNX on the CPU, when one is cached for this model, imgsz and batch), and
    each one's model-alone frames/s on `frames` (decoded frames in; decode not counted)."""
    from worker import engine_cache  # noqa: PLC0415
    from worker.engines import build  # noqa: PLC0415

    cuda = device.startswith("cuda")
    exported = "tensorrt" if cuda else "onnx"
    rows: list[dict[str, Any]] = [{"engine": "ultralytics", "available": True}, {"engine": "torch", "available": True}]
    try:
        key = engine_cache.device_key(
            variant, "engine" if cuda else "onnx", half=cuda, batch=ENGINE_BATCH, imgsz=imgsz, device=device
        )
        path, why = engine_cache.lookup(key)
    except ModelError as exc:
        path, why = None, str(exc)
    rows.append({"engine": exported, "available": path is not None, "path": str(path) if path else None})
    if path is None:
        rows[-1]["reason"] = why
    for row in rows:
        if not (bench and row["available"]):
            continue
        try:
            det = build(variant, device=device, half=cuda, engine=row["engine"], engine_batch=ENGINE_BATCH)
            det.predict(frames[:DEFAULT_BATCH_SIZE], conf=0.25, imgsz=imgsz)
            t0 = time.perf_counter()
            for i in range(0, len(frames), DEFAULT_BATCH_SIZE):
                det.predict(frames[i : i + DEFAULT_BATCH_SIZE], conf=0.25, imgsz=imgsz)
            row["fps"] = round(len(frames) / (time.perf_counter() - t0), 1)
        except (ModelError, RuntimeError) as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
    return rows


def collect(*, variant: str, imgsz: int, frames: int, bench: bool) -> dict[str, Any]:
    apply_worker_thread_env()  # OpenMP threads that sleep when idle, as in a worker (before torch loads)
    import torch  # noqa: PLC0415  (slow import: only this command pays it)

    from worker import threads  # noqa: PLC0415

    threads.hold(torch.get_num_threads())  # Ultralytics' predictor setup would reset them to cores - 1
    specs, links = gpu_specs()
    cuda = torch.cuda.is_available()
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if cuda else ["cpu"]
    model: dict[str, Any] = {"variant": variant}
    try:
        model["weights"] = models.resolve(variant, allow_path=True)
        model["estimated_mb"] = estimate_model_mb(model["weights"])
    except ModelError as exc:
        model["error"] = str(exc)
    strategy = recommend(specs, model_mb=model.get("estimated_mb"))
    if not specs:
        message = f"No NVIDIA GPU found: benchmarking the CPU with {torch.get_num_threads()} torch threads."
    elif not cuda:
        message = (
            f"NVML sees {len(specs)} GPU(s) but torch {torch.__version__} cannot use CUDA here "
            f"(CPU-only build or CUDA_VISIBLE_DEVICES): benchmarking the CPU with {torch.get_num_threads()} threads."
        )
    else:
        message = f"{len(specs)} GPU(s) found; torch {torch.__version__} sees {len(devices)}."
    report: dict[str, Any] = {
        "gpu_count": len(specs),
        "driver_version": gpu.driver_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "gpus": specs,
        "topology": links,
        "model": model,
        "strategy": asdict(strategy),
        "message": message,
        "benchmark": [],
        #: device -> the engines that exist for it, with model-alone frames/s (batch DEFAULT_BATCH_SIZE)
        "engines": {},
    }
    if bench and "error" not in model:
        images = bench_frames(frames, imgsz)
        for device in devices:
            for half in (False, True) if device.startswith("cuda") else (False,):
                report["benchmark"].append(benchmark(variant, device, images, imgsz=imgsz, half=half))
            report["engines"][device] = engine_rows(variant, device, images, imgsz=imgsz, bench=True)
    elif bench:
        report["benchmark_skipped"] = model["error"]
    return report


def render(report: dict[str, Any], *, imgsz: int) -> str:
    lines = [report["message"]]
    if report["gpus"]:
        lines.append(f"Driver {report['driver_version']}, CUDA {report['cuda_version']}, torch {report['torch']}")
    for g in report["gpus"]:
        link = f"PCIe gen{g.get('pcie_gen')} x{g.get('pcie_width')}" if g.get("pcie_gen") else "PCIe ?"
        nvlink = f", NVLink {g['nvlink_active_links']} links" if g.get("nvlink_active_links") else ""
        lines.append(
            f"  GPU {g.get('index')}: {g.get('name')}, {g.get('memory_used_mb')}/{g.get('memory_total_mb')} MB used, "
            f"compute {g.get('compute_capability')}, {link}{nvlink}"
        )
    for t in report["topology"]:
        lines.append(f"  GPU {t['a']} <-> GPU {t['b']}: {t['link']}")
    s = report["strategy"]
    lines.append(f"Recommended strategy: {s['name']}: {s['reason']}")
    if report.get("benchmark_skipped"):
        lines.append(f"Benchmark skipped: {report['benchmark_skipped']}")
    elif report["benchmark"]:
        lines.append(f"Benchmark ({report['model']['variant']}, imgsz {imgsz}, demo clip frames):")
    for b in report["benchmark"]:
        threads = f", {b['torch_threads']} torch threads" if "torch_threads" in b else ""
        if "error" in b:
            lines.append(f"  {b['device']:<7} {b['precision']}  failed: {b['error']}")
        else:
            lines.append(
                f"  {b['device']:<7} {b['precision']}  {b['fps']:8.1f} frames/s  "
                f"({b['ms_per_frame']} ms/frame, batch {b['batch']}, {b['frames']} frames{threads})"
            )
    for device, rows in report.get("engines", {}).items():
        lines.append(f"Engines on {device} (model alone, batch {DEFAULT_BATCH_SIZE}):")
        for row in rows:
            if "fps" in row:
                lines.append(f"  {row['engine']:<12} {row['fps']:8.1f} frames/s")
            else:
                lines.append(f"  {row['engine']:<12} {row.get('error') or 'not exported: ' + str(row.get('reason'))}")
    return "\n".join(lines)


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--variant", default=DEFAULT_MODEL, show_default=True, help="Model to benchmark.")
@click.option("--imgsz", type=click.IntRange(32, 4096), default=320, show_default=True, help="Inference size.")
@click.option("--frames", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Frames per run.")
@click.option("--no-bench", is_flag=True, help="Only report the GPUs and the strategy.")
def gpus(as_json: bool, variant: str, imgsz: int, frames: int, no_bench: bool) -> None:
    """GPUs, recommended strategy and a short benchmark (the guide's gpu_test.py)."""
    # Ultralytics logs its warnings to stdout; keep them out of the report (and out of --json). A filter,
    # not a level: importing ultralytics resets its logger's level.
    quiet = _ErrorsOnly()
    ultralytics_log = logging.getLogger("ultralytics")
    ultralytics_log.addFilter(quiet)
    try:
        report = collect(variant=variant, imgsz=imgsz, frames=frames, bench=not no_bench)
    finally:
        ultralytics_log.removeFilter(quiet)
    click.echo(json.dumps(report, indent=2) if as_json else render(report, imgsz=imgsz))
