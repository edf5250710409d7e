"""Load YOLO weights so that a checkpoint's pickle cannot run code.

A `.pt` file is a zip holding a pickle. Unpickled the usual way (`torch.load(weights_only=False)`,
Ultralytics' default) it calls whatever callables it names: a crafted file runs `os.system` as the
worker's user. Loading here has two layers:

1. A scan of the pickle's global references with `torch.serialization.get_unsafe_globals_in_checkpoint`
   (it reads opcodes and executes nothing) against the module prefixes a YOLO checkpoint needs. It
   names what a refused file wanted (`posix.system`), which the unpickler's own error does not, and
   it refuses files that are not a torch zip archive (legacy or raw pickles it cannot read).
2. The load itself in Ultralytics' restricted mode (its `ULTRALYTICS_SAFE_LOAD` switch, 8.4+):
   torch's `weights_only` unpickler with Ultralytics' exact allow-list of model classes, a
   `getattr` limited to nn.Module attributes, and model building without `eval`. The scan alone
   would not be enough (`torch.nn.` holds callables, and `builtins.getattr` reaches anything under a
   full unpickle); the restricted unpickler is the guard, and it is the one the file is loaded
   with, so nothing can change between the check and the load.

Ultralytics reads the switch from the module global `ultralytics.nn.tasks.SAFE_LOAD` on every load
(`YOLO()` passes no per-call flag down to `torch_safe_load`), so the load sets that global for its
duration, under a lock. A file that fails either layer raises ModelError, unless its directory is
trusted (RTAI_WEIGHTS_DIR with RTAI_TRUST_WEIGHTS_DIR=1): then Ultralytics' full unpickle runs.
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

from common.errors import ModelError

#: Module prefixes of the globals a YOLO checkpoint references beyond torch's own safe set. They cover
#: every entry Ultralytics' restricted loader can allow (nn modules, its own classes, numpy scalars and
#: dtypes, pathlib paths, torchvision transforms, CLIP), so the scan never refuses a file that loader
#: would accept; it only names, early, what a refused file wanted.
ALLOWED_PREFIXES = ("torch.nn.", "ultralytics.", "numpy.", "pathlib.", "torchvision.transforms.", "clip.")
#: Exact globals allowed besides those prefixes (Ultralytics maps getattr to an nn.Module-only one).
ALLOWED_GLOBALS = frozenset({"builtins.getattr"})
#: What Ultralytics and torch raise for a file they cannot or will not load.
LOAD_ERRORS = (
    OSError,
    RuntimeError,
    ValueError,
    KeyError,
    AttributeError,
    TypeError,
    ImportError,
    EOFError,
    pickle.UnpicklingError,
)

_lock = threading.Lock()


def refused_globals(path: str) -> list[str]:
    """Globals the checkpoint's pickle would import that no YOLO checkpoint needs (empty: fine).

    Raises ModelError for a file that is not a torch zip archive."""
    import torch  # noqa: PLC0415  (heavy; only where a model loads)

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelError(f"{path} is not a torch zip checkpoint, so it cannot be loaded safely ({exc})") from exc
    return sorted(n for n in names if n not in ALLOWED_GLOBALS and not n.startswith(ALLOWED_PREFIXES))


def _restricted_mode_available() -> bool:
    import torch  # noqa: PLC0415
    from ultralytics.nn import tasks  # noqa: PLC0415

    safe_load = getattr(tasks, "_SafeLoad", None)
    return (
        hasattr(tasks, "SAFE_LOAD")
        and bool(getattr(safe_load, "SUPPORTED", False))
        and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint")
    )


def load_yolo(path: str, *, trusted: bool, label: str) -> Any:
    """An Ultralytics YOLO model from `path` (a .pt file, or a stock architecture .yaml name).

    Untrusted files load only through the restricted unpickler; `label` names the model in errors."""
    from ultralytics import YOLO  # noqa: PLC0415  (torch import is slow; only workers pay it)
    from ultralytics.nn import tasks  # noqa: PLC0415

    is_checkpoint = path.endswith(".pt")
    if not trusted:
        if not _restricted_mode_available():
            raise ModelError(
                f"model {label}: this Ultralytics/torch cannot load weights safely (needs ultralytics>=8.4 with "
                f"ULTRALYTICS_SAFE_LOAD and torch>=2.6); refusing to unpickle {path}"
            )
        if is_checkpoint:
            bad = refused_globals(path)
            if bad:
                raise _needs_full_unpickle(label, path, ", ".join(bad[:5]))
    with _lock:
        before = getattr(tasks, "SAFE_LOAD", False)
        tasks.SAFE_LOAD = not trusted
        try:
            return YOLO(path, task="detect")
        except LOAD_ERRORS as exc:
            if not trusted and is_checkpoint and "outside the supported" in str(exc):
                raise _needs_full_unpickle(label, path, "types outside Ultralytics' allow-list") from exc
            raise ModelError(f"model {label}: cannot load {path}: {exc}") from exc
        finally:
            tasks.SAFE_LOAD = before


def _needs_full_unpickle(label: str, path: str, what: str) -> ModelError:
    return ModelError(
        f"model {label}: refused {path}: its pickle imports {what}, which safe loading does not allow "
        f"(only an operator can allow a full unpickle, for RTAI_WEIGHTS_DIR, with RTAI_TRUST_WEIGHTS_DIR=1)"
    )
