"""Where models live: the bundled one, stock weights and the operator's files (names: common/model_names.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import ASSETS_DIR, ultralytics_weights_dir, weights_dir
from .model_names import (
    FILE_NAME,
    GUIDE_NAME,
    NAME_MAX_LEN,
    NAME_PATTERN,
    OWN_MODEL,
    SIZES,
    STOCK_NAME,
    STOCK_YAML,
    check_name,
    is_custom,
    stock_file,
)

__all__ = [
    "FILE_NAME",
    "GUIDE_NAME",
    "NAME_MAX_LEN",
    "NAME_PATTERN",
    "OWN_MODEL",
    "OWN_WEIGHTS",
    "SIZES",
    "STOCK_NAME",
    "STOCK_YAML",
    "Available",
    "available",
    "check_name",
    "is_custom",
    "stock_file",
    "weights_dir_files",
]

OWN_WEIGHTS = ASSETS_DIR / "rtai-shapes.pt"


def weights_dir_files() -> list[str]:
    """Names of the model files in RTAI_WEIGHTS_DIR (sorted); empty when it is unset or unreadable."""
    root = weights_dir()
    if root is None:
        return []
    try:
        return sorted(p.name for p in root.iterdir() if FILE_NAME.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


@dataclass(frozen=True)
class Available:
    name: str
    kind: str  # bundled | stock | weights_dir
    present: bool
    path: str | None


def available() -> list[Available]:
    """Every model name this host can serve or would look for: bundled, stock (present or not), files."""
    out = [Available(OWN_MODEL, "bundled", OWN_WEIGHTS.is_file(), str(OWN_WEIGHTS))]
    dirs = [d for d in (weights_dir(), ultralytics_weights_dir()) if d is not None]
    for size in SIZES:
        file = f"yolo11{size}.pt"
        found = next((d / file for d in dirs if (d / file).is_file()), None)
        out.append(Available(f"yolo11{size}", "stock", found is not None, str(found) if found else None))
    root = weights_dir()
    for name in weights_dir_files():
        if stock_file(name) is None and root is not None:
            out.append(Available(name, "weights_dir", True, str(Path(root) / name)))
    return out
