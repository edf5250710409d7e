"""Snapshots under the stream's caps: at most `snapshot_max_count` / `snapshot_max_bytes` kept past the
pending TTL, the rest refused and counted; `snapshot_events` keeps them only for the chosen event types."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from common import keys
from common.wire import Frame
from worker.snapshots import keep_snapshots

from ..helpers import wait_for
from .test_tracking import ANALYTICS, H, W, declare, events_of, result, stats, trajectories

N = 60


def worker_snapshots(r, stream: str, frames: list) -> int:
    """Each frame's JPEG kept as a worker keeps it (pending TTL); returns one snapshot's stored size."""
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8))
    assert ok
    shots = [Frame(seq=s, t_capture=0.0, w=W, h=H, enc="jpeg", dw=160, dh=120, data=buf.tobytes()) for s in range(N)]
    keep_snapshots(r, stream, shots, [result(stream, s, frames[s]) for s in range(N)])
    return int(r.strlen(keys.snapshot(stream, 0)))


def kept(r, stream: str) -> list[int]:
    return [s for s in range(N) if r.ttl(keys.snapshot(stream, s)) > keys.SNAPSHOT_PENDING_TTL_S]


@pytest.mark.timeout(60)
def test_snapshots_are_capped_per_stream_in_count_and_bytes_and_by_event_type(r, procs):
    frames = trajectories(N)
    size = 0
    for stream, extra in (
        ("counted", {"snapshot_max_count": 2}),
        ("sized", {}),
        ("typed", {"snapshot_events": ["crossed"]}),
    ):
        size = worker_snapshots(r, stream, frames)
        if stream == "sized":
            extra = {"snapshot_max_bytes": int(size * 3.5)}
        declare(r, stream, {**ANALYTICS, "snapshots": True, **extra})
    procs.rtai("tracker")
    for stream in ("counted", "sized", "typed"):
        for seq in range(N):
            r.xadd(keys.history(stream), {"r": result(stream, seq, frames[seq])})
    for stream in ("counted", "sized", "typed"):
        wait_for(lambda s=stream: stats(r, s).get("tracked") == N, timeout=30, what=f"{stream} tracked")
    by_stream: dict[str, list[dict]] = {}
    for ev in events_of(r, ""):
        by_stream.setdefault(ev["stream"], []).append(ev)
    for stream, cap in (("counted", 2), ("sized", 3)):
        event_frames = sorted({e["seq"] for e in by_stream[stream]})
        assert len(event_frames) > cap
        assert kept(r, stream) == event_frames[:cap]  # the first ones; the cap refuses the rest
        assert stats(r, stream)["snapshots_kept"] == cap
        assert stats(r, stream)["snapshots_refused"] == len(event_frames) - cap
        with_snapshot = {e["seq"] for e in by_stream[stream] if e["snapshot"]}
        assert with_snapshot == set(event_frames[:cap])  # an event over the cap names no snapshot
    crossed = sorted({e["seq"] for e in by_stream["typed"] if e["type"] == "crossed"})
    assert crossed and kept(r, "typed") == crossed
    assert all(bool(e["snapshot"]) == (e["seq"] in crossed) for e in by_stream["typed"])
