"""Prometheus exposition of the fleet through prometheus_client: a custom collector reads Redis at
scrape time (as Frigate's does), so the API process keeps no counters of its own.

Metrics: rtai_frames_total{stream,outcome}, rtai_frames_in_flight{stream}, rtai_queue_depth{stream},
rtai_stream_state{stream,state}, rtai_latency_seconds{stream} (histogram; rtai_latency_ms, the same in
milliseconds, is deprecated and goes in the next release), rtai_worker_frames_total,
rtai_worker_fps, rtai_worker_up and rtai_gpu_{utilization_pct,memory_used_mb,temperature_c,power_w}
{worker,gpu}, rtai_rejected_jobs_total.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from common import ledger
from common.shards import Fleet, client_for
from control import status

from .analytics_metrics import AnalyticsCollector

#: The text format generate_latest writes, understood by every Prometheus version.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
_GPU_GAUGES = (
    ("utilization_pct", "GPU utilisation (%)."),
    ("memory_used_mb", "GPU memory used."),
    ("temperature_c", "GPU temperature (C)."),
    ("power_w", "GPU power draw (W)."),
)


class FleetCollector(Collector):
    """Every metric, read from Redis when Prometheus scrapes."""

    def __init__(self, client: Fleet) -> None:
        self.client = client

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not reach Redis

    def collect(self) -> Iterator[Metric]:
        report = status.collect(self.client)
        # While a shard does not answer, a count summed over the shards would go down and read as a
        # counter reset (its whole count again once the shard is back): it is left out (a gap).
        partial = not all(shard["up"] for shard in report.get("shards", []))
        yield from self._streams(report["streams"])
        yield from self._workers(report["workers"], partial=partial)
        rejected = CounterMetricFamily(
            "rtai_rejected_jobs", "Jobs refused by workers (not allowed, unreadable).", labels=[]
        )
        if not partial:
            rejected.add_metric([], report["fleet"].get("rejected_jobs", 0))
        yield rejected

    def _streams(self, streams: dict[str, Any]) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "rtai_frames", "Frames by outcome (produced, published, dropped_*, failed).", labels=["stream", "outcome"]
        )
        in_flight = GaugeMetricFamily(
            "rtai_frames_in_flight", "Frames produced and not yet accounted for.", labels=["stream"]
        )
        depth = GaugeMetricFamily("rtai_queue_depth", "Batches waiting in the stream's queue.", labels=["stream"])
        state = GaugeMetricFamily("rtai_stream_state", "1 for the stream's current state.", labels=["stream", "state"])
        latency = HistogramMetricFamily(
            "rtai_latency_seconds", "Capture-to-publish latency of published frames.", labels=["stream"]
        )
        #: Deprecated: the same histogram in ms (Prometheus wants base units); kept one release for dashboards.
        latency_ms = HistogramMetricFamily(
            "rtai_latency_ms", "Deprecated: rtai_latency_seconds in milliseconds.", labels=["stream"]
        )
        for s, info in streams.items():
            state.add_metric([s, info["state"]], 1)
            if "shard" in info and info["state"] == "unknown":
                continue  # its shard does not answer (status.collect): its counters are left out, not 0
            for outcome, value in info["ledger"].items():
                if outcome != "in_flight":
                    frames.add_metric([s, outcome], value)
            in_flight.add_metric([s], info["ledger"]["in_flight"])
            depth.add_metric([s], info["queue_depth"])
            h = ledger.read_latency_hist(client_for(self.client, s), s)
            buckets_ms, buckets_s, cumulative = [], [], 0.0
            for bound in (*ledger.LATENCY_BUCKETS_MS, "+Inf"):
                cumulative += h.get(str(bound), 0.0)
                buckets_ms.append((str(bound), cumulative))
                buckets_s.append((bound if bound == "+Inf" else repr(float(bound) / 1000), cumulative))
            latency.add_metric([s], buckets_s, h.get("sum_ms", 0.0) / 1000)
            latency_ms.add_metric([s], buckets_ms, h.get("sum_ms", 0.0))
        yield from (frames, in_flight, depth, state, latency, latency_ms)

    def _workers(self, workers: dict[str, Any], *, partial: bool = False) -> Iterator[Metric]:
        """`partial`: a shard does not answer, so a worker's frames (summed over its shards) are left out."""
        labels = ["worker", "gpu"]
        frames = CounterMetricFamily("rtai_worker_frames", "Frames a worker accounted for.", labels=labels)
        fps = GaugeMetricFamily("rtai_worker_fps", "Frames per second a worker accounts for now.", labels=labels)
        up = GaugeMetricFamily("rtai_worker_up", "1 while the worker's lease is live.", labels=labels)
        gpu = {f: GaugeMetricFamily(f"rtai_gpu_{f}", text, labels=labels) for f, text in _GPU_GAUGES}
        for name, w in workers.items():
            values = [name, w.get("gpu", "")]
            if not partial:
                frames.add_metric(values, w["frames"])
            fps.add_metric(values, float(w.get("fps", 0) or 0))
            up.add_metric(values, int(w["alive"]))
            for field, family in gpu.items():
                if f"gpu_{field}" in w:
                    family.add_metric(values, float(w[f"gpu_{field}"]))
        yield from (frames, fps, up, *gpu.values())


def registry(client: Fleet) -> CollectorRegistry:
    """A registry holding only the fleet's collector (no process or platform metrics of the API)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(client))
    reg.register(AnalyticsCollector(client))
    return reg
