"""Analytics figures for /metrics: events by stream and type, tracks in each zone, tracked/skipped frames.

`families(client)` gives (name, kind, help, samples) for any exporter (the prometheus_client
conversion can register them as a custom collector); `render(client)` is the text format.
"""

from __future__ import annotations

from typing import Any

import redis

from common import desired, keys

Family = tuple[str, str, str, list[tuple[dict[str, Any], float]]]


def families(client: redis.Redis) -> list[Family]:
    events, zones, frames = [], [], []
    for stream in desired.streams(client):
        for kind, n in client.hgetall(keys.event_counts(stream)).items():
            events.append(({"stream": stream, "type": kind.decode()}, float(n)))
        for zone, n in client.hgetall(keys.zone_counts(stream)).items():
            zones.append(({"stream": stream, "zone": zone.decode()}, float(n)))
        for outcome, n in client.hgetall(keys.track_stats(stream)).items():
            if outcome in (b"tracked", b"skipped", b"late"):
                frames.append(({"stream": stream, "outcome": outcome.decode()}, float(n)))
    return [
        ("rtai_events_total", "counter", "Analytics events by stream and type.", events),
        ("rtai_zone_tracks", "gauge", "Tracks in each zone now.", zones),
        ("rtai_tracking_frames_total", "counter", "Frames tracked, skipped (missing after the wait), late.", frames),
    ]


def render(client: redis.Redis) -> str:
    out = []
    for name, kind, help_text, samples in families(client):
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in samples:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {value}")
    return "\n".join(out) + "\n"
