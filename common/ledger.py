"""Per-stream counters that account for every frame: produced == published + dropped_* + failed."""

from __future__ import annotations

from typing import Any

import redis

from . import keys
from .states import Outcome

PRODUCED = "produced"
COUNTERS = (PRODUCED, *(o.value for o in Outcome))


def count(pipe: Any, stream: str, counter: str, n: int = 1) -> None:
    """Add n to one counter (on a client or a pipeline)."""
    pipe.hincrby(keys.ledger(stream), counter, n)


def read(client: redis.Redis, stream: str) -> dict[str, int]:
    raw = client.hgetall(keys.ledger(stream))
    values = {k.decode(): int(v) for k, v in raw.items()}
    out = {name: values.get(name, 0) for name in COUNTERS}
    out["in_flight"] = out[PRODUCED] - sum(out[o.value] for o in Outcome)
    return out


def balanced(counts: dict[str, int]) -> bool:
    return counts["in_flight"] == 0


def dropped(counts: dict[str, int]) -> int:
    """All frames dropped on purpose (backpressure, staleness, Redis unreachable)."""
    return sum(v for k, v in counts.items() if k.startswith("dropped_"))
