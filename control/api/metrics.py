"""Prometheus text exposition of the fleet: per-stream counters and latency, per-worker/GPU gauges."""

from __future__ import annotations

from typing import Any

import redis

from common import ledger
from control import status


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render(client: redis.Redis) -> str:
    report = status.collect(client)
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, Any], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")

    streams = report["streams"]
    metric(
        "rtai_frames_total",
        "counter",
        "Frames by outcome (produced, published, dropped_*, failed).",
        [
            ({"stream": s, "outcome": k}, v)
            for s, info in streams.items()
            for k, v in info["ledger"].items()
            if k != "in_flight"
        ],
    )
    metric(
        "rtai_frames_in_flight",
        "gauge",
        "Frames produced and not yet accounted for.",
        [({"stream": s}, info["ledger"]["in_flight"]) for s, info in streams.items()],
    )
    metric(
        "rtai_queue_depth",
        "gauge",
        "Batches waiting in the stream's queue.",
        [({"stream": s}, info["queue_depth"]) for s, info in streams.items()],
    )
    metric(
        "rtai_stream_state",
        "gauge",
        "1 for the stream's current state.",
        [({"stream": s, "state": info["state"]}, 1) for s, info in streams.items()],
    )
    hist: list[tuple[dict[str, Any], float]] = []
    for s in streams:
        h = ledger.read_latency_hist(client, s)
        cumulative = 0.0
        for bound in (*ledger.LATENCY_BUCKETS_MS, "+Inf"):
            cumulative += h.get(str(bound), 0.0)
            hist.append(({"stream": s, "le": bound}, cumulative))
    out.append("# HELP rtai_latency_ms Capture-to-publish latency of published frames (ms).")
    out.append("# TYPE rtai_latency_ms histogram")
    for labels, value in hist:
        out.append(f'rtai_latency_ms_bucket{{stream="{_label(labels["stream"])}",le="{labels["le"]}"}} {value}')
    for s in streams:
        h = ledger.read_latency_hist(client, s)
        out.append(f'rtai_latency_ms_sum{{stream="{_label(s)}"}} {h.get("sum_ms", 0.0)}')
        out.append(f'rtai_latency_ms_count{{stream="{_label(s)}"}} {h.get("count", 0.0)}')
    workers = report["workers"]
    metric(
        "rtai_worker_frames_total",
        "counter",
        "Frames a worker accounted for.",
        [({"worker": n, "gpu": w.get("gpu", "")}, w["frames"]) for n, w in workers.items()],
    )
    metric(
        "rtai_worker_fps",
        "gauge",
        "Frames per second a worker accounts for now.",
        [({"worker": n, "gpu": w.get("gpu", "")}, float(w.get("fps", 0) or 0)) for n, w in workers.items()],
    )
    metric(
        "rtai_worker_up",
        "gauge",
        "1 while the worker's lease is live.",
        [({"worker": n, "gpu": w.get("gpu", "")}, int(w["alive"])) for n, w in workers.items()],
    )
    for field, help_text in (
        ("utilization_pct", "GPU utilisation (%)."),
        ("memory_used_mb", "GPU memory used."),
        ("temperature_c", "GPU temperature (C)."),
        ("power_w", "GPU power draw (W)."),
    ):
        samples = [
            ({"worker": n, "gpu": w.get("gpu", "")}, float(w[f"gpu_{field}"]))
            for n, w in workers.items()
            if f"gpu_{field}" in w
        ]
        metric(f"rtai_gpu_{field}", "gauge", help_text, samples)
    metric(
        "rtai_rejected_jobs_total",
        "counter",
        "Jobs refused by workers (not allowed, unreadable).",
        [({}, report["fleet"].get("rejected_jobs", 0))],
    )
    return "\n".join(out) + "\n"
