"""Which weights file a model name means, with an error that says what is missing and where."""

from __future__ import annotations

import re
from pathlib import Path

from common.config import ASSETS_DIR, weights_dirs
from common.errors import ModelError

#: The project's own model: YOLO11n trained on the synthetic shapes (see common/assets/MODEL.md).
OWN_MODEL = "rtai-shapes"
OWN_WEIGHTS = ASSETS_DIR / "rtai-shapes.pt"
SIZES = "nsmlx"
GUIDE_NAME = re.compile(r"^multi_gpu_yolov11([nsmlx])$")
STOCK_NAME = re.compile(r"^yolo11([nsmlx])\.(pt|yaml)$")


def canonical(variant: str) -> str:
    """The file name a variant means: multi_gpu_yolov11s -> yolo11s.pt; rtai-shapes -> its path."""
    if variant in ("", OWN_MODEL):
        return str(OWN_WEIGHTS)
    match = GUIDE_NAME.match(variant)
    if match:
        return f"yolo11{match.group(1)}.pt"
    if re.fullmatch(r"yolo11[nsmlx]", variant):
        return variant + ".pt"
    return variant


def ultralytics_weights_dir() -> Path | None:
    from ultralytics.utils import WEIGHTS_DIR  # noqa: PLC0415  (heavy import, only when needed)

    return Path(WEIGHTS_DIR)


def resolve(variant: str) -> str:
    """A local path (or an architecture YAML name) for `variant`; ModelError when none exists."""
    name = canonical(variant)
    path = Path(name)
    if path.suffix == ".yaml" and STOCK_NAME.match(path.name):
        return name  # architecture only: Ultralytics builds it with random weights
    if path.is_absolute() or len(path.parts) > 1:
        if path.exists():
            return str(path)
        raise ModelError(f"model {variant!r}: weights file {path} does not exist")
    candidates = [d / name for d in weights_dirs()]
    wdir = ultralytics_weights_dir()
    if wdir is not None:
        candidates.append(wdir / name)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    if STOCK_NAME.match(name):
        return _download(variant, name, candidates)
    raise ModelError(
        f"model {variant!r}: {name} not found; looked in {', '.join(str(c.parent) for c in candidates)}. "
        f"Put the file there or set RTAI_WEIGHTS_DIR."
    )


def _download(variant: str, name: str, candidates: list[Path]) -> str:
    from ultralytics.utils.downloads import attempt_download_asset  # noqa: PLC0415

    try:
        return str(attempt_download_asset(name))
    except (OSError, ConnectionError, RuntimeError, ValueError) as exc:
        raise ModelError(
            f"model {variant!r}: {name} is not on this machine and could not be downloaded ({exc}). "
            f"Download it from https://github.com/ultralytics/assets/releases and put it in "
            f"{candidates[0].parent} or in RTAI_WEIGHTS_DIR."
        ) from exc
