"""Readable process names in `ps` and `top` (rtai-worker:gpu0, rtai-producer:cam1, ...)."""

from __future__ import annotations

from collections.abc import Callable

_set: Callable[[str], None] | None
try:
    from setproctitle import setproctitle as _set
except ImportError:  # an optional nicety: without it the title stays `python -m worker ...`
    _set = None


def set_title(title: str) -> None:
    if _set is not None:
        _set(title)
