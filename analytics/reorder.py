"""Put a stream's results back in `seq` order, waiting a bounded time for a missing frame.

Workers finish frames out of order; the tracker needs them in order. A frame that is still missing
`wait_s` after a later one arrived is skipped (counted) and tracking goes on without it.

Where tracking starts: a stream's first frame is seq 0, so a buffer holding 0 starts there at once.
A tracker that joins a running stream (no stored position) waits `wait_s` after the first frame it
sees and starts at the lowest seq it then holds: the worker that took the earlier frames may finish
after the one that took later ones, and starting at the first arrival would drop those as late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Ready:
    """What pop() hands out: frames in order, and how many seqs were skipped on the way."""

    frames: list[tuple[int, Any]] = field(default_factory=list)
    skipped: int = 0


class Reorder:
    def __init__(self, wait_s: float, next_seq: int | None = None) -> None:
        self.wait_s = wait_s
        self.next_seq = next_seq
        self.buffer: dict[int, Any] = {}
        self.gap_since: float | None = None
        self.first_seen: float | None = None
        self.late = 0

    def add(self, seq: int, item: Any) -> bool:
        """Buffer a frame; False (and counted late) when its seq was already handed out or skipped."""
        if self.next_seq is not None and seq < self.next_seq or seq in self.buffer:
            self.late += 1
            return False
        self.buffer[seq] = item
        return True

    def pop(self, now: float) -> Ready:
        ready = Ready()
        if self.next_seq is None and self.buffer:
            if self.first_seen is None:
                self.first_seen = now
            if 0 not in self.buffer and now - self.first_seen < self.wait_s:
                return ready
            self.next_seq = min(self.buffer)
        while self.buffer:
            item = self.buffer.pop(self.next_seq, None)  # type: ignore[arg-type]
            if item is not None:
                ready.frames.append((self.next_seq, item))  # type: ignore[arg-type]
                self.next_seq += 1  # type: ignore[operator]
                self.gap_since = None
                continue
            if self.gap_since is None:
                self.gap_since = now
            if now - self.gap_since < self.wait_s:
                break
            first = min(self.buffer)
            ready.skipped += first - self.next_seq  # type: ignore[operator]
            self.next_seq, self.gap_since = first, None
        return ready
