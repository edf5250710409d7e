"""Zone counts against the demo clip's ground truth: a zone holds the tracked boxes in it on the newest
frame, never a track the tracker lost and keeps in its buffer (the count the issue saw at 9-10 of 5)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from analytics.bytetrack import ByteTrack
from analytics.zones import Rules, inside
from common.analytics_settings import AnalyticsSettings

GT = Path(__file__).resolve().parents[2] / "common" / "assets" / "demo.gt.json"
LEFT_HALF = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]


def test_zone_counts_follow_the_ground_truth_through_missed_detections():
    gt = json.loads(GT.read_text())
    w, h = gt["width"], gt["height"]
    zone = [(x, y) for x, y in LEFT_HALF]
    rules = Rules(AnalyticsSettings(track={}, zones=[{"name": "left", "points": LEFT_HALF}]))
    ids = iter(range(1, 10_000))
    tracker = ByteTrack(allocate=lambda: next(ids))
    rng = random.Random(7)
    counts, truth, whys = [], [], set()
    for i, frame in enumerate(gt["frames"]):
        # A detector that misses one box in four: the tracker keeps the missed ones as lost tracks.
        seen = [[x1, y1, x2, y2, 0.9, cls] for cls, x1, y1, x2, y2 in frame if rng.random() > 0.25]
        rows, alive = tracker.update(np.array(seen, dtype=np.float64).reshape(-1, 6))
        zones, events = rules.step(rows, alive, w, h, i / gt["fps"])
        in_gt = sum(inside(zone, (x1 + x2) / 2 / w, y2 / h) for _cls, x1, _y1, x2, y2 in frame)
        counts.append(rules.counts["left"])
        truth.append(in_gt)
        assert rules.counts["left"] == sum("left" in z for z in zones)  # the boxes in it on this frame
        assert rules.counts["left"] <= in_gt <= 5
        for ev in events:
            if ev["type"] in ("entered", "left"):
                assert ev["count"] == rules.counts["left"]
            if ev["type"] == "left":
                whys.add(ev["why"])
    assert max(counts) <= 5 and whys == {"left", "lost"}
    # With every box detected again, the count is the ground truth's.
    frame = gt["frames"][-1]
    for _ in range(3):
        rows, alive = tracker.update(np.array([[*b[1:], 0.9, b[0]] for b in frame], dtype=np.float64))
        rules.step(rows, alive, w, h, 99.0)
    assert rules.counts["left"] == truth[-1]
