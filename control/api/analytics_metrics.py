"""Analytics figures for /metrics: events by stream and type, tracks in each zone, tracked/skipped frames.

`families(client)` gives (name, kind, help, samples); `AnalyticsCollector` serves them through
prometheus_client beside the fleet's collector (control/api/metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common import desired, keys
from common.redis_client import describe
from common.replies import text
from common.shards import Fleet, Shards, client_for, home_of

log = logging.getLogger(__name__)

Family = tuple[str, str, str, list[tuple[dict[str, Any], float]]]


def families(fleet: Fleet) -> list[Family]:
    """Each declared stream's figures, read from its shard. A shard that does not answer leaves its
    streams out (once: its other streams are not tried in the same scrape); the others are served."""
    events, zones, frames = [], [], []
    down: set[int] = set()
    for stream in desired.streams(home_of(fleet)):
        client = client_for(fleet, stream)
        if id(client) in down:
            continue
        try:
            with client.pipeline(transaction=False) as pipe:
                pipe.hgetall(keys.event_counts(stream))
                pipe.hgetall(keys.zone_counts(stream))
                pipe.hgetall(keys.track_stats(stream))
                by_kind, by_zone, stats = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not isinstance(fleet, Shards) or not fleet.sharded:
                raise  # one Redis: /metrics says it is unreachable
            log.info("analytics of %s left out of /metrics: %s", stream, describe(exc))
            down.add(id(client))
            continue
        for kind, n in by_kind.items():
            events.append(({"stream": stream, "type": text(kind)}, float(n)))
        for zone, n in by_zone.items():
            zones.append(({"stream": stream, "zone": text(zone)}, float(n)))
        for outcome, n in stats.items():
            if outcome in (b"tracked", b"skipped", b"late", b"bad"):
                frames.append(({"stream": stream, "outcome": text(outcome)}, float(n)))
    return [
        ("rtai_events_total", "counter", "Analytics events by stream and type.", events),
        ("rtai_zone_tracks", "gauge", "Tracks in each zone now.", zones),
        (
            "rtai_tracking_frames_total",
            "counter",
            "Frames tracked, skipped (missing after the wait), late, bad (unreadable or untrackable).",
            frames,
        ),
    ]


class AnalyticsCollector(Collector):
    """The analytics families, read from Redis when Prometheus scrapes."""

    def __init__(self, client: Fleet) -> None:
        self.client = client

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registering must not reach Redis

    def collect(self) -> Iterator[Metric]:
        for name, kind, help_text, samples in families(self.client):
            labels = sorted(samples[0][0]) if samples else []
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in samples:
                family.add_metric([str(values[k]) for k in labels], value)
            yield family
