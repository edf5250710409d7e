"""Which weights file a model name means, where it may come from, and loading it safely.

Names follow common/models.py. Files come only from the bundled assets, RTAI_WEIGHTS_DIR and
Ultralytics' weights cache (not the working directory: what happens to lie where a worker was
started is no operator's choice). Missing stock weights are downloaded only with
RTAI_ALLOW_DOWNLOADS=1 or by `rtai models pull`, never on a worker's hot path by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import models as names
from common.config import allow_downloads, trust_weights_dir, weights_dir
from common.errors import ModelError

from . import weights

log = logging.getLogger(__name__)

OWN_MODEL = names.OWN_MODEL
OWN_WEIGHTS = names.OWN_WEIGHTS


@dataclass(frozen=True)
class Weights:
    path: str  # the file to load, or a stock architecture YAML name
    trusted: bool  # a full unpickle is allowed (RTAI_WEIGHTS_DIR with RTAI_TRUST_WEIGHTS_DIR=1)


def canonical(variant: str) -> str:
    """The file name a variant means: multi_gpu_yolov11s -> yolo11s.pt; rtai-shapes -> its path."""
    if variant in ("", OWN_MODEL):
        return str(OWN_WEIGHTS)
    return names.stock_file(variant) or variant


def ultralytics_weights_dir() -> Path:
    from ultralytics.utils import WEIGHTS_DIR  # noqa: PLC0415  (heavy import, only when needed)

    return Path(WEIGHTS_DIR)


def _is_path(variant: str) -> bool:
    return "/" in variant or "\\" in variant or Path(variant).is_absolute()


def locate(variant: str, *, allow_path: bool = False) -> Weights:
    """Where the weights of `variant` are on this machine; ModelError when they are not.

    `allow_path` is for the program's own choice (the in-process Python API, `rtai gpus --variant`):
    an existing local file, still loaded safely. A request or a Redis payload never gets it."""
    if allow_path and _is_path(variant):
        path = Path(variant)
        if not path.is_file():
            raise ModelError(f"model {variant!r}: weights file {path} does not exist")
        return Weights(str(path), trusted=False)
    name = names.check_name(variant or OWN_MODEL)
    if name == OWN_MODEL:
        return Weights(str(OWN_WEIGHTS), trusted=False)
    if names.STOCK_YAML.fullmatch(name):
        return Weights(name, trusted=False)  # architecture only: Ultralytics builds it from its package
    file = canonical(name)
    root = weights_dir()
    if root is not None and (root / file).is_file():
        return Weights(str(root / file), trusted=trust_weights_dir())
    if names.is_custom(name):
        where = f"RTAI_WEIGHTS_DIR ({root})" if root is not None else "RTAI_WEIGHTS_DIR (not set on this worker)"
        raise ModelError(f"model {file} is not in {where}")
    cached = ultralytics_weights_dir() / file
    if cached.is_file():
        return Weights(str(cached), trusted=False)
    if allow_downloads():
        return Weights(str(pull(file)), trusted=False)
    raise ModelError(missing_message(file))


def missing_message(file: str) -> str:
    stem = file.removesuffix(".pt")
    return (
        f"model {file} is not on this machine: put it in RTAI_WEIGHTS_DIR or run rtai models pull {stem} "
        f"(or set RTAI_ALLOW_DOWNLOADS=1 on the workers)"
    )


def resolve(variant: str, *, allow_path: bool = False) -> str:
    """A local path (or an architecture YAML name) for `variant`; ModelError when none exists."""
    return locate(variant, allow_path=allow_path).path


def load(variant: str, *, allow_path: bool = False) -> Any:
    """The Ultralytics model for `variant`, loaded so that its pickle cannot run code (see weights.py)."""
    w = locate(variant, allow_path=allow_path)
    return weights.load_yolo(w.path, trusted=w.trusted, label=variant or OWN_MODEL)


def pull(name: str) -> Path:
    """Download stock weights (`yolo11s`, `yolo11s.pt`, `multi_gpu_yolov11s`) into RTAI_WEIGHTS_DIR,
    or Ultralytics' weights cache when that is unset; returns the file. Only on an operator's word."""
    file = names.stock_file(name)
    if file is None:
        raise ModelError(f"{name!r} is not a stock model: only yolo11[nsmlx] can be pulled")
    root = weights_dir() or ultralytics_weights_dir()
    target = root / file
    if target.is_file():
        return target
    from ultralytics.utils.downloads import attempt_download_asset  # noqa: PLC0415

    root.mkdir(parents=True, exist_ok=True)
    log.warning("downloading %s to %s", file, target)
    try:
        got = Path(attempt_download_asset(target))
    except (OSError, ConnectionError, RuntimeError, ValueError) as exc:
        raise ModelError(f"model {file}: download failed ({exc}); put the file in {root} yourself") from exc
    if not got.is_file():
        raise ModelError(f"model {file}: download failed; put the file in {root} yourself")
    return got
