"""Reorder buffer and zone/line rules without Redis: order, skips, late frames, one event per crossing."""

from __future__ import annotations

import numpy as np

from analytics.reorder import Reorder
from analytics.zones import Rules, crossing
from common.analytics_settings import AnalyticsSettings


def test_reorder_waits_for_a_missing_frame_then_skips_it_and_counts_late_arrivals():
    ro = Reorder(wait_s=1.0, next_seq=0)
    for seq in (1, 0, 3):
        ro.add(seq, seq)
    got = ro.pop(now=10.0)
    assert [s for s, _ in got.frames] == [0, 1] and got.skipped == 0  # 2 is missing: wait
    assert ro.pop(now=10.5).frames == []
    got = ro.pop(now=11.0)
    assert [s for s, _ in got.frames] == [3] and got.skipped == 1
    assert not ro.add(2, 2) and ro.late == 1  # too late: already skipped


def test_tracking_starts_at_seq_0_at_once_and_waits_for_earlier_frames_when_joining_mid_stream():
    fresh = Reorder(wait_s=1.0)
    fresh.add(0, 0)
    assert [s for s, _ in fresh.pop(now=10.0).frames] == [0]
    joined = Reorder(wait_s=1.0)
    joined.add(8, 8)  # a fast worker's later frames arrive first
    assert joined.pop(now=10.0).frames == []
    for seq in (6, 7):  # the slower worker's earlier frames, within the wait
        joined.add(seq, seq)
    assert joined.pop(now=10.5).frames == []
    got = joined.pop(now=11.0)
    assert [s for s, _ in got.frames] == [6, 7, 8] and got.skipped == 0 and joined.late == 0


def test_each_crossing_and_zone_entry_is_reported_once_with_its_direction():
    settings = AnalyticsSettings(
        track={},
        zones=[{"name": "z", "points": [[0.2, 0.0], [0.4, 0.0], [0.4, 1.0], [0.2, 1.0]]}],
        lines=[{"name": "g", "points": [[0.5, 0.0], [0.5, 1.0]]}],
    )
    rules = Rules(settings)
    events = []
    xs = list(np.linspace(0.05, 0.95, 40)) + list(np.linspace(0.95, 0.05, 40))  # there and back
    for i, x in enumerate(xs):
        rows = np.array([[x * 100 - 5, 40, x * 100 + 5, 50, 1, 0.9, 0]], dtype=np.float64)
        _zones, ev = rules.step(rows, {1}, 100, 100, float(i))
        events += [(e["type"], e.get("direction")) for e in ev]
    _zones, ev = rules.step(np.zeros((0, 7)), set(), 100, 100, 99.0)
    events += [(e["type"], e.get("direction")) for e in ev]
    assert events == [
        ("appeared", None), ("entered", None), ("left", None), ("crossed", "in"),
        ("crossed", "out"), ("entered", None), ("left", None), ("lost", None),
    ]  # fmt: skip
    assert crossing((0.5, 0.0), (0.5, 0.3), (0.4, 0.5), (0.6, 0.5)) is None  # past the segment's end
