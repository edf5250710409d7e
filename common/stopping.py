"""A process's loops: one thread each (one per Redis shard), stopped on SIGTERM or SIGINT (Ctrl-C)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...


class Loop(Stoppable, Protocol):
    #: Where it runs, for logs and its thread's name ("" with one Redis, " on <shard>" otherwise).
    where: str

    def run(self) -> None: ...


def run_loops(loops: Sequence[Loop], kind: str) -> None:
    """Run each loop until it stops: on this thread when there is one, else one thread each (named
    `kind` and its shard). A loop that ends on an error stops the others, and the error is raised
    here, so the process exits with it as a one-Redis process would."""
    if len(loops) == 1:
        loops[0].run()
        return
    failed: list[BaseException] = []

    def guarded(loop: Loop) -> None:
        try:
            loop.run()
        except BaseException as exc:  # noqa: BLE001 - a shard's thread's outer loop: raised again in the caller
            failed.append(exc)
            for other in loops:
                other.stop()

    threads = [
        threading.Thread(target=guarded, args=(loop,), name=f"{kind}{loop.where}", daemon=True) for loop in loops
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)  # a timeout, so this thread still takes SIGTERM's handler
    if failed:
        raise failed[0]


def stop_on_signals(loops: Iterable[Stoppable]) -> None:
    """SIGTERM and SIGINT ask every one of `loops` to stop (each finishes what it holds first)."""
    held = list(loops)

    def stop(*_: object) -> None:
        for loop in held:
            loop.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
