"""Model names: the one rule the API, stream declarations, producers and workers share.

A model is named, never given as a path:
- `rtai-shapes`: the bundled model (common/assets/rtai-shapes.pt);
- `yolo11{n,s,m,l,x}` (with or without `.pt`) and the guide's `multi_gpu_yolov11{n,s,m,l,x}`: stock
  Ultralytics weights, looked for in RTAI_WEIGHTS_DIR and Ultralytics' weights cache;
- `yolo11{n,s,m,l,x}.yaml`: the architecture only (random weights, from Ultralytics' own package);
- `<file>.pt`: a file an operator placed in RTAI_WEIGHTS_DIR (one path component: letters, digits,
  `_`, `-`, and single dots between them; so no `/`, no `..`, nothing absolute).

This module imports nothing of the project but its errors, so settings (common/config.py) can
check a name without importing where models live (common/models.py).
"""

from __future__ import annotations

import re

from .errors import ModelError

OWN_MODEL = "rtai-shapes"
SIZES = "nsmlx"
GUIDE_NAME = re.compile(r"multi_gpu_yolov11([nsmlx])")
STOCK_NAME = re.compile(r"yolo11([nsmlx])(\.pt)?")
STOCK_YAML = re.compile(r"yolo11[nsmlx]\.yaml")
#: A file in RTAI_WEIGHTS_DIR: one path component, dot-separated parts that are never empty.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.pt")
#: The same rule as one regular expression, for request schemas (pydantic `pattern`).
NAME_PATTERN = rf"^(?:{OWN_MODEL}|{GUIDE_NAME.pattern}|{STOCK_NAME.pattern}|{STOCK_YAML.pattern}|{FILE_NAME.pattern})$"
NAME_MAX_LEN = 128


def check_name(name: object) -> str:
    """`name` when it is a model name the fleet accepts; ModelError (saying what is allowed) if not."""
    if isinstance(name, str) and len(name) <= NAME_MAX_LEN:
        if name == OWN_MODEL or any(p.fullmatch(name) for p in (GUIDE_NAME, STOCK_NAME, STOCK_YAML, FILE_NAME)):
            return name
    raise ModelError(
        f"model {name!r} is not a model name: use {OWN_MODEL}, yolo11[nsmlx][.pt], multi_gpu_yolov11[nsmlx], "
        f"yolo11[nsmlx].yaml, or the name of a .pt file in RTAI_WEIGHTS_DIR (no paths)"
    )


def stock_file(name: str) -> str | None:
    """`yolo11s.pt` for yolo11s, yolo11s.pt and multi_gpu_yolov11s; None for any other name."""
    match = GUIDE_NAME.fullmatch(name) or STOCK_NAME.fullmatch(name)
    return f"yolo11{match.group(1)}.pt" if match else None


def is_custom(name: str) -> bool:
    """True for an operator's file name (not bundled, not stock)."""
    return name != OWN_MODEL and stock_file(name) is None and not STOCK_YAML.fullmatch(name)
