"""ByteTrack on arrays: Ultralytics' BYTETracker (same two-stage association, parameters and quirks),
with every track's state in a few NumPy arrays instead of one Python object per track.

Ultralytics' tracker spends its time in per-track Python: an STrack object per detection, an 8x8
Kalman predict/update per track, list joins by id. Here a frame is a fixed number of array operations
whatever the number of tracks:

- The Kalman filter is Ultralytics' KalmanFilterXYAH (state x, y, aspect, height and their velocities;
  the same noise weights). Its initial, process and measurement noises are diagonal and the motion
  couples each coordinate only with its own velocity, so the 8x8 covariance is four independent 2x2
  blocks: it is kept as three (N, 4) arrays (pos-pos, pos-vel, vel-vel) and predict/update are
  element-wise, exactly the same filter.
- Matching is the same `lap.lapjv(cost, extend_cost=True, cost_limit=thresh)`, skipped when each row's
  cheapest column under the threshold is a different column (that assignment is then the optimum).
- The pools keep Ultralytics' order (tracked, then lost) and its bookkeeping: a track removed as stale
  stays in the lost pool one more frame, a track once removed never re-enters the lost pool, duplicate
  tracked/lost pairs (IoU > 0.85) drop the younger one.

Ids are the stream's own: a track gets one (from `allocate`) the first frame it is output.
"""

from __future__ import annotations

from collections.abc import Callable

import lap
import numpy as np

#: Track states (Ultralytics' TrackState): tracked, lost, removed (still in the lost pool for one frame).
TRACKED, LOST, REMOVED = 1, 2, 3
#: KalmanFilterXYAH's noise weights, relative to the box height.
W_POS, W_VEL = 1.0 / 20, 1.0 / 160
#: Thresholds Ultralytics hard-codes: low-score association, unconfirmed association, duplicate pools.
LOW_MATCH_THRESH, UNCONFIRMED_MATCH_THRESH, DUPLICATE_IOU_DIST = 0.5, 0.7, 0.15

# Columns of the float table: Kalman state and covariance blocks, then what a track reports.
POS, VEL, PPP, PPV, PVV = slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16), slice(16, 20)
SCORE, CLS, IDX, LAST, START, SID = 20, 21, 22, 23, 24, 25
N_COLS = 26

_POS_SCALE = np.array([1.0, 1.0, 0.0, 1.0])  # std multiplied by the height; aspect has a constant std
_EMPTY = np.empty(0, dtype=np.intp)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes (float32, as Ultralytics' bbox_ioa(iou=True) computes it)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = iw.clip(0) * ih.clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_b[None, :] + area_a[:, None] - inter + 1e-7)


def assign(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Ultralytics' linear_assignment -> (matched rows, their columns), rows in ascending order."""
    rows, cols = cost.shape
    if rows == 0 or cols == 0:
        return _EMPTY, _EMPTY
    best = cost.argmin(axis=1)
    ok = cost[np.arange(rows), best] < thresh
    picked = best[ok]
    if np.bincount(picked, minlength=cols).max(initial=0) <= 1:
        return np.flatnonzero(ok), picked  # every row gets its cheapest column: the optimum
    _, x, _ = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
    matched = np.flatnonzero(x >= 0)
    return matched, x[matched]


def _unmatched(n: int, matched: np.ndarray) -> np.ndarray:
    keep = np.ones(n, dtype=bool)
    keep[matched] = False
    return np.flatnonzero(keep)


class ByteTrack:
    def __init__(
        self,
        *,
        allocate: Callable[[], int],
        track_high_thresh: float = 0.25,
        track_low_thresh: float = 0.1,
        new_track_thresh: float = 0.25,
        track_buffer: int = 30,
        match_thresh: float = 0.8,
        fuse_score: bool = True,
    ) -> None:
        self.allocate = allocate
        self.high, self.low, self.new = track_high_thresh, track_low_thresh, new_track_thresh
        self.buffer, self.match, self.fuse = track_buffer, match_thresh, fuse_score
        self.frame = 0
        self.f = np.empty((0, N_COLS))  # one row per track, in pool order (tracked, then lost)
        self.state = np.empty(0, dtype=np.int8)
        self.activated = np.empty(0, dtype=bool)
        self.ever_removed = np.empty(0, dtype=bool)

    # -- Kalman filter (KalmanFilterXYAH, block-diagonal form) --

    def _predict(self, i: np.ndarray) -> None:
        f = self.f
        h = f[i, 3:4]
        qp = np.square(W_POS * h * _POS_SCALE)
        qp[:, 2] = 1e-4
        qv = np.square(W_VEL * h * _POS_SCALE)
        qv[:, 2] = 1e-10
        pos, vel, ppp, ppv, pvv = f[i, POS], f[i, VEL], f[i, PPP], f[i, PPV], f[i, PVV]
        f[i, POS] = pos + vel
        f[i, PPP] = ppp + 2 * ppv + pvv + qp
        f[i, PPV] = ppv + pvv
        f[i, PVV] = pvv + qv

    def _update(self, i: np.ndarray, z: np.ndarray) -> None:
        f = self.f
        pos, ppp, ppv = f[i, POS], f[i, PPP], f[i, PPV]
        r = np.square(W_POS * pos[:, 3:4] * _POS_SCALE)
        r[:, 2] = 1e-2
        s = ppp + r
        kp, kv = ppp / s, ppv / s
        innovation = z - pos
        f[i, POS] = pos + kp * innovation
        f[i, VEL] += kv * innovation
        f[i, PVV] -= ppv * kv
        f[i, PPP] = ppp - ppp * kp
        f[i, PPV] = ppv - ppv * kp

    @staticmethod
    def _initiate(z: np.ndarray) -> np.ndarray:
        rows = np.zeros((len(z), N_COLS))
        h = z[:, 3:4]
        rows[:, POS] = z
        rows[:, PPP] = np.square(2 * W_POS * h * _POS_SCALE)
        rows[:, 10] = 1e-4
        rows[:, PVV] = np.square(10 * W_VEL * h * _POS_SCALE)
        rows[:, 18] = 1e-10
        return rows

    def _xyxy(self, i: np.ndarray | slice) -> np.ndarray:
        m = self.f[i, POS]
        w = m[:, 2] * m[:, 3]
        x1, y1 = m[:, 0] - w / 2, m[:, 1] - m[:, 3] / 2
        return np.stack([x1, y1, x1 + w, y1 + m[:, 3]], axis=1).astype(np.float32)

    # -- one frame --

    def update(self, boxes: np.ndarray) -> tuple[np.ndarray, set[int]]:
        """Track one frame's boxes (N, 6: x1, y1, x2, y2, conf, cls) -> rows (x1, y1, x2, y2, track id, conf,
        cls, index of the box) of the tracks seen in this frame; and the ids of the tracks still alive
        (tracked or lost but not yet removed)."""
        self.frame += 1
        frame = self.frame
        d = boxes.astype(np.float32, copy=False)
        # Detections as Ultralytics' STrack sees them: xywh -> ltwh (float32), xyah for the filter.
        wh = d[:, 2:4] - d[:, 0:2]
        lt = (d[:, 0:2] + d[:, 2:4]) / 2 - wh / 2
        det_xyxy = np.concatenate([lt, lt + wh], axis=1)
        det_xyah = np.concatenate([lt + wh / 2, wh[:, 0:1] / wh[:, 1:2], wh[:, 1:2]], axis=1).astype(np.float64)
        conf = d[:, 4]
        valid = (wh[:, 0] > 0) & (wh[:, 1] > 0)
        hi = np.flatnonzero(valid & (conf >= self.high))
        lo = np.flatnonzero(valid & (conf > self.low) & (conf < self.high))

        state, n = self.state, len(self.state)
        tracked = state == TRACKED
        unconfirmed = np.flatnonzero(tracked & ~self.activated)
        pool = np.flatnonzero(~tracked | self.activated)
        if len(pool):
            self.f[pool[state[pool] != TRACKED], 7] = 0.0  # a lost track's height stops changing
            self._predict(pool)
        xyxy = self._xyxy(slice(None)) if n else np.empty((0, 4), np.float32)

        # 1. confident boxes <-> tracked and lost tracks
        upd_tracks: list[np.ndarray] = []
        upd_dets: list[np.ndarray] = []
        cost = 1 - iou(xyxy[pool], det_xyxy[hi])
        if self.fuse and cost.size:
            cost = 1 - (1 - cost) * conf[hi][None, :]
        rows, cols = assign(cost, self.match)
        refound = pool[rows][state[pool[rows]] != TRACKED]
        upd_tracks.append(pool[rows])
        upd_dets.append(hi[cols])
        u_pool = pool[_unmatched(len(pool), rows)]
        u_hi = hi[_unmatched(len(hi), cols)]
        # 2. unmatched tracked tracks <-> low-score boxes; the rest are lost
        r_tracked = u_pool[state[u_pool] == TRACKED]
        rows, cols = assign(1 - iou(xyxy[r_tracked], det_xyxy[lo]), LOW_MATCH_THRESH)
        upd_tracks.append(r_tracked[rows])
        upd_dets.append(lo[cols])
        newly_lost = r_tracked[_unmatched(len(r_tracked), rows)]
        # 3. tracks seen once <-> confident boxes left; unmatched ones are removed
        cost = 1 - iou(xyxy[unconfirmed], det_xyxy[u_hi])
        if self.fuse and cost.size:
            cost = 1 - (1 - cost) * conf[u_hi][None, :]
        rows, cols = assign(cost, UNCONFIRMED_MATCH_THRESH)
        upd_tracks.append(unconfirmed[rows])
        upd_dets.append(u_hi[cols])
        dropped = unconfirmed[_unmatched(len(unconfirmed), rows)]
        left = u_hi[_unmatched(len(u_hi), cols)]
        born = left[conf[left] >= self.new]

        # Apply: Kalman updates, states, then new tracks.
        ti, di = np.concatenate(upd_tracks), np.concatenate(upd_dets)
        if len(ti):
            self._update(ti, det_xyah[di])
            self.f[ti, SCORE], self.f[ti, CLS], self.f[ti, IDX], self.f[ti, LAST] = conf[di], d[di, 5], di, frame
            state[ti] = TRACKED
            self.activated[ti] = True
        state[newly_lost] = LOST
        state[dropped] = REMOVED
        was_lost = ~tracked
        stale = np.flatnonzero(was_lost & (state != TRACKED) & (frame - self.f[:, LAST] > self.buffer))
        state[stale] = REMOVED

        # Pools in Ultralytics' order: tracked kept, born, refound | lost kept, newly lost.
        group = np.full(n, -1, dtype=np.int64)
        group[tracked & (state == TRACKED)] = 0
        group[refound] = 2
        in_lost = was_lost & (state != TRACKED) & ~self.ever_removed
        group[in_lost] = 3
        group[newly_lost[~self.ever_removed[newly_lost]]] = 4
        self.ever_removed[stale] = True
        order = np.argsort(group * (n + len(born) + 1) + np.arange(n), kind="stable")
        order = order[group[order] >= 0]
        if len(born):
            new = self._initiate(det_xyah[born])
            new[:, SCORE], new[:, CLS], new[:, IDX], new[:, LAST], new[:, START] = (
                conf[born], d[born, 5], born, frame, frame
            )  # fmt: skip
            cut = int(np.count_nonzero(group[order] == 0))  # born tracks go after the tracked ones kept
            keep = order
            self.f = np.concatenate([self.f[keep[:cut]], new, self.f[keep[cut:]]])
            self.state = np.concatenate([state[keep[:cut]], np.full(len(born), TRACKED, np.int8), state[keep[cut:]]])
            self.activated = np.concatenate(
                [self.activated[keep[:cut]], np.full(len(born), frame == 1), self.activated[keep[cut:]]]
            )
            self.ever_removed = np.concatenate(
                [self.ever_removed[keep[:cut]], np.zeros(len(born), bool), self.ever_removed[keep[cut:]]]
            )
        else:
            self.f, self.state = self.f[order], state[order]
            self.activated, self.ever_removed = self.activated[order], self.ever_removed[order]

        self._drop_duplicates()
        return self._output()

    def _drop_duplicates(self) -> None:
        """Ultralytics' remove_duplicate_stracks: a tracked and a lost track on the same spot (IoU > 0.85)
        -> the one tracked for fewer frames goes (the tracked one on a tie)."""
        a = np.flatnonzero(self.state == TRACKED)
        b = np.flatnonzero(self.state != TRACKED)
        if not len(a) or not len(b):
            return
        xyxy = self._xyxy(slice(None))
        p, q = np.nonzero(1 - iou(xyxy[a], xyxy[b]) < DUPLICATE_IOU_DIST)
        if not len(p):
            return
        age = self.f[:, LAST] - self.f[:, START]
        a_older = age[a[p]] > age[b[q]]
        keep = np.ones(len(self.state), dtype=bool)
        keep[b[q[a_older]]] = False
        keep[a[p[~a_older]]] = False
        self.f, self.state = self.f[keep], self.state[keep]
        self.activated, self.ever_removed = self.activated[keep], self.ever_removed[keep]

    def _output(self) -> tuple[np.ndarray, set[int]]:
        out = np.flatnonzero((self.state == TRACKED) & self.activated)
        f = self.f
        for i in out[f[out, SID] == 0].tolist():
            f[i, SID] = self.allocate()
        rows = np.empty((len(out), 8))
        rows[:, :4] = self._xyxy(out)
        rows[:, 4] = f[out, SID]
        rows[:, 5] = f[out, SCORE]
        rows[:, 6] = f[out, CLS]
        rows[:, 7] = f[out, IDX]
        sids = f[:, SID]
        return rows, set(sids[sids > 0].astype(np.int64).tolist())
