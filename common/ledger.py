"""Per-stream counters that account for every frame: produced == published + dropped_* + failed +
skipped_static."""

from __future__ import annotations

from collections import Counter
from typing import Any

import redis

from . import keys
from .replies import text
from .states import Outcome

PRODUCED = "produced"
COUNTERS = (PRODUCED, *(o.value for o in Outcome))


def count(pipe: Any, stream: str, counter: str, n: int = 1) -> None:
    """Add n to one counter (on a client or a pipeline)."""
    pipe.hincrby(keys.ledger(stream), counter, n)


def read(client: redis.Redis, stream: str) -> dict[str, int]:
    raw = client.hgetall(keys.ledger(stream))
    return _counts({text(k): int(v) for k, v in raw.items()})


def read_empty() -> dict[str, int]:
    """A ledger with nothing counted (a stream whose Redis cannot be read now)."""
    return _counts({})


def _counts(values: dict[str, int]) -> dict[str, int]:
    out = {name: values.get(name, 0) for name in COUNTERS}
    out["in_flight"] = out[PRODUCED] - sum(out[o.value] for o in Outcome)
    return out


def balanced(counts: dict[str, int]) -> bool:
    return counts["in_flight"] == 0


def dropped(counts: dict[str, int]) -> int:
    """All frames dropped on purpose (backpressure, staleness, Redis unreachable or full)."""
    return sum(v for k, v in counts.items() if k.startswith("dropped_"))


#: Latency histogram buckets (ms, capture to publish), Prometheus-style upper bounds.
LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000)


def latency_bucket(ms: float) -> str:
    for bound in LATENCY_BUCKETS_MS:
        if ms <= bound:
            return str(bound)
    return "+Inf"


def record_latencies(pipe: Any, stream: str, latencies_ms: list[float]) -> None:
    """Add published frames' latencies to the stream's histogram (on a pipeline)."""
    key = keys.latency_hist(stream)
    for bucket, count in Counter(latency_bucket(ms) for ms in latencies_ms).items():  # one HINCRBY a bucket
        pipe.hincrby(key, bucket, count)
    if latencies_ms:
        pipe.hincrbyfloat(key, "sum_ms", sum(latencies_ms))
        pipe.hincrby(key, "count", len(latencies_ms))


def read_latency_hist(client: redis.Redis, stream: str) -> dict[str, float]:
    return {text(k): float(v) for k, v in client.hgetall(keys.latency_hist(stream)).items()}
