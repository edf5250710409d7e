"""`rtai models`: which model names this machine can serve, and fetching stock weights on purpose."""

from __future__ import annotations

import json

import click

from common import models as names
from common.config import DEFAULT_IMGSZ
from common.errors import ModelError
from worker import models


@click.group("models")
def models_group() -> None:
    """Model names this machine can serve; `pull` downloads stock weights (the only way besides
    RTAI_ALLOW_DOWNLOADS=1)."""


@models_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls(as_json: bool) -> None:
    """Bundled, stock and RTAI_WEIGHTS_DIR models, with where each one's file is on this machine."""
    rows = []
    for entry in names.available():
        path = entry.path
        if entry.kind == "stock" and not entry.present:
            cached = models.ultralytics_weights_dir() / f"{entry.name}.pt"
            path = str(cached) if cached.is_file() else None
        rows.append({"name": entry.name, "kind": entry.kind, "present": path is not None, "path": path})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        where = row["path"] or f"missing (rtai models pull {row['name']})"
        click.echo(f"{row['name']:<24} {row['kind']:<12} {where}")


@models_group.command("pull")
@click.argument("name")
def pull(name: str) -> None:
    """Download stock weights (yolo11n ... yolo11x) into RTAI_WEIGHTS_DIR, else Ultralytics' cache."""
    try:
        path = models.pull(name)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: {path}")


@models_group.command("export")
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "engine"]),
    default="onnx",
    show_default=True,
    help="onnx (ONNX Runtime, CPU workers) or engine (TensorRT, built on the GPU that runs it).",
)
@click.option("--half", is_flag=True, help="FP16 (GPU only; ignored for ONNX on the CPU).")
@click.option("--batch", type=int, default=8, show_default=True, help="Batch the engine is built for (ONNX: most).")
@click.option(
    "--imgsz", type=int, default=DEFAULT_IMGSZ, show_default=True, help="Inference size (the fleet's default)."
)
@click.option("--device", default=None, help="cpu, or cuda:N (default cuda:0 for engine, cpu for onnx).")
def export(name: str, fmt: str, half: bool, batch: int, imgsz: int, device: str | None) -> None:
    """Export NAME to ONNX or a TensorRT engine, cached under the weights directory (engines/) with a
    key of model, format, precision, batch, imgsz (and GPU arch + TensorRT version for engines).
    Idempotent: an intact cached export is reused."""
    from worker import engine_cache  # noqa: PLC0415  (imports torch and Ultralytics)

    device = device or ("cuda:0" if fmt == "engine" else "cpu")
    try:
        path, built = engine_cache.export(name, fmt, half=half, batch=batch, imgsz=imgsz, device=device)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: {'built' if built else 'cached'} {path}")
