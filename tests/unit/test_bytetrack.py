"""Our ByteTrack against Ultralytics' BYTETracker on generated scenes with known identities: objects
that cross, vanish for a few frames, come back, low-score boxes and clutter. Scored with motmetrics
(IDF1, identity switches); ours must do at least as well, and in fact gives the same tracks."""

from __future__ import annotations

import itertools

import motmetrics as mm
import numpy as np
import pytest

from analytics.bytetrack import ByteTrack, assign
from analytics.tracker import Detections, make_tracker
from common.analytics_settings import TrackSettings

W, H = 1280, 720


def scene(seed: int, n_frames: int = 240, n_objects: int = 14) -> tuple[list[np.ndarray], list[list[int]]]:
    """Boxes (x1, y1, x2, y2, conf, cls) per frame and the object behind each box (-1: clutter)."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0], [W, H], (n_objects, 2))
    vel = rng.normal(0, 6, (n_objects, 2))
    size = rng.uniform(20, 120, (n_objects, 2))
    born = rng.integers(0, n_frames // 2, n_objects)
    gone = born + rng.integers(20, n_frames, n_objects)
    frames, truth = [], []
    for f in range(n_frames):
        vel += rng.normal(0, 0.5, vel.shape)
        pos += vel
        out = (pos < 0) | (pos > [W, H])
        vel[out] *= -1  # bounce off the frame's edges
        pos = np.clip(pos, 0, [W, H])
        boxes, ids = [], []
        for i in range(n_objects):
            if not born[i] <= f < gone[i] or rng.random() < 0.08:  # not there, or missed this frame
                continue
            c, s = pos[i] + rng.normal(0, 2, 2), size[i] * rng.uniform(0.92, 1.08, 2)
            conf = rng.uniform(0.5, 0.95) if rng.random() < 0.85 else rng.uniform(0.12, 0.3)
            boxes.append([c[0] - s[0] / 2, c[1] - s[1] / 2, c[0] + s[0] / 2, c[1] + s[1] / 2, conf, i % 3])
            ids.append(i)
        for _ in range(rng.poisson(0.5)):
            x, y = rng.uniform([0, 0], [W, H])
            boxes.append([x, y, x + 30, y + 30, rng.uniform(0.1, 0.4), 1])
            ids.append(-1)
        frames.append(np.array(boxes, dtype=np.float32).reshape(-1, 6))
        truth.append(ids)
    return frames, truth


def ours(frames: list[np.ndarray]) -> list[np.ndarray]:
    ids = itertools.count(1)
    tracker = ByteTrack(allocate=lambda: next(ids))
    return [tracker.update(boxes)[0] for boxes in frames]


def theirs(frames: list[np.ndarray]) -> list[np.ndarray]:
    tracker = make_tracker(TrackSettings(tracker_type="ultralytics-bytetrack"))
    return [np.asarray(tracker.update(Detections(boxes))).reshape(-1, 8)[:, :7] for boxes in frames]


def iou_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU of xyxy boxes, NaN beyond 0.5 (motmetrics' convention; its own helper needs NumPy < 2)."""
    if len(a) == 0 or len(b) == 0:
        return np.empty((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    dist = 1 - inter / (area(a)[:, None] + area(b)[None, :] - inter)
    dist[dist > 0.5] = np.nan
    return dist


def score(frames: list[np.ndarray], truth: list[list[int]], tracked: list[np.ndarray]) -> tuple[float, int]:
    acc = mm.MOTAccumulator(auto_id=True)
    for boxes, ids, rows in zip(frames, truth, tracked, strict=True):
        real = [i for i, t in enumerate(ids) if t >= 0]
        acc.update([ids[i] for i in real], rows[:, 4].astype(int).tolist(), iou_distance(boxes[real], rows))
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches"], name="x")
    return float(summary["idf1"].iloc[0]), int(summary["num_switches"].iloc[0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ours_scores_at_least_as_well_as_ultralytics_bytetracker(seed):
    frames, truth = scene(seed)
    f1, switches = score(frames, truth, ours(frames))
    their_f1, their_switches = score(frames, truth, theirs(frames))
    print(f"seed {seed}: ours IDF1 {f1:.4f} ({switches} switches), Ultralytics {their_f1:.4f} ({their_switches})")
    assert their_f1 > 0.7  # the scene is trackable, not noise
    assert f1 >= their_f1 - 1e-9 and switches <= their_switches


def test_ours_gives_ultralytics_tracks_box_for_box_with_the_same_identities():
    for seed in (4, 5):
        frames, _ = scene(seed, n_objects=30)  # crowded: many crossings, duplicates, lost and refound tracks
        mapping: dict[int, int] = {}
        for f, (a, b) in enumerate(zip(ours(frames), theirs(frames), strict=True)):
            assert len(a) == len(b), f"seed {seed} frame {f}"
            a, b = a[np.lexsort(a[:, :2].T)], b[np.lexsort(b[:, :2].T)]
            np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-3)
            for mine, their in zip(a[:, 4].astype(int), b[:, 4].astype(int), strict=True):
                assert mapping.setdefault(their, mine) == mine, f"seed {seed} frame {f}: identity differs"
        assert len(set(mapping.values())) == len(mapping)


def test_ids_come_from_allocate_once_per_track_and_leave_alive_when_removed():
    given = iter(range(100, 200))
    tracker = ByteTrack(allocate=lambda: next(given), track_buffer=5)
    box = np.array([[100, 100, 140, 150, 0.9, 0]], dtype=np.float32)
    rows, alive = tracker.update(box)
    assert rows[:, 4].tolist() == [100] and alive == {100}  # the first frame's tracks are confirmed at once
    for f in range(1, 10):
        rows, alive = tracker.update(box + [[2 * f, 0, 2 * f, 0, 0, 0]])
        assert rows[:, 4].tolist() == [100]
    empty = np.empty((0, 6), dtype=np.float32)
    for _ in range(6):
        rows, alive = tracker.update(empty)
        assert len(rows) == 0 and alive == {100}  # lost, not yet removed
    for _ in range(2):
        rows, alive = tracker.update(empty)
    assert alive == set()
    far = np.array([[900, 500, 940, 550, 0.9, 1]], dtype=np.float32)
    tracker.update(far)  # a new track is confirmed on its second frame
    rows, alive = tracker.update(far)
    assert rows[:, 4].tolist() == [101] and alive == {101}


def test_assignment_takes_the_cheapest_columns_or_solves_the_conflict_like_lapjv():
    rows, cols, u_rows, u_cols = assign(np.array([[0.1, 0.9, 0.95], [0.9, 0.2, 0.95]]), 0.8)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1] and u_rows.tolist() == [] and u_cols.tolist() == [2]
    # both rows prefer column 0: the optimum gives it to row 1 (0.1 + 0.3 < 0.2 + 0.5)
    rows, cols, _, _ = assign(np.array([[0.2, 0.3], [0.1, 0.5]]), 0.8)
    assert dict(zip(rows.tolist(), cols.tolist(), strict=True)) == {0: 1, 1: 0}
    rows, _, u_rows, _ = assign(np.array([[0.85, 0.9]]), 0.8)  # nothing under the threshold
    assert rows.tolist() == [] and u_rows.tolist() == [0]
