"""`rtai models`: which model names this machine can serve, and fetching stock weights on purpose."""

from __future__ import annotations

import json

import click

from common import models as names
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
