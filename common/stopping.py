"""Stopping a process's loops on SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


def stop_on_signals(loops: Iterable[Stoppable]) -> None:
    """SIGTERM and SIGINT ask every one of `loops` to stop (each finishes what it holds first)."""
    held = list(loops)

    def stop(*_: object) -> None:
        for loop in held:
            loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
