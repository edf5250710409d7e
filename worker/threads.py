"""Torch CPU threads: how many a worker gets, and holding that count through Ultralytics.

Ultralytics' `select_device()` calls `torch.set_num_threads(NUM_THREADS)` (cpu_count - 1) when a
predictor is set up, i.e. on a model's first predict: a worker started with `--threads 2` would
then run on one thread on a 2-core host. `hold()` patches that module constant to the worker's
count, and the detector re-applies the count after each predict in case anything else reset it.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: torch's thread count seen inside the last forward pass (None before the first one).
_seen: int | None = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(workers: int = 1) -> int:
    """A CPU worker's share of the cores available to it, among `workers` processes."""
    return max(1, available_cores() // max(1, workers))


def hold(n: int) -> None:
    """Run torch on `n` threads, and make Ultralytics' device setup keep that count."""
    import torch  # noqa: PLC0415  (a no-op/sleep worker never imports torch)

    torch.set_num_threads(n)
    try:
        from ultralytics.utils import torch_utils  # noqa: PLC0415
    except ImportError:  # pragma: no cover - ultralytics is a dependency
        return
    torch_utils.NUM_THREADS = n


def reapply(n: int) -> None:
    """Set torch back to `n` threads if something changed it (cheap: one getter call)."""
    import torch  # noqa: PLC0415

    if torch.get_num_threads() != n:
        log.warning("torch threads were reset to %d; back to %d", torch.get_num_threads(), n)
        torch.set_num_threads(n)


def record_seen(n: int | None = None) -> None:
    """Called inside a forward pass (a pre-hook): the thread count inference really runs on (torch's,
    or `n`: an ONNX Runtime session's intra-op threads)."""
    global _seen
    if n is None:
        import torch  # noqa: PLC0415

        n = torch.get_num_threads()
    _seen = n


def seen() -> int | None:
    return _seen
