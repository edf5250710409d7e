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

# Columns of the Kalman table: mean (position, velocity), covariance blocks pos-pos, pos-vel, vel-vel.
POS, VEL, PPP, PPV, PVV = slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16), slice(16, 20)
# Columns of the info table.
SCORE, CLS, LAST, START, SID = range(5)
_OUT_COLS = [SID, SCORE, CLS]

# Noise terms per coordinate (x, y, aspect, height): the std is a weight times the height, except the
# aspect's, which is constant. Variances = (W_POS * h)^2 * scale + add.
_POS_SCALE = np.array([1.0, 1.0, 0.0, 1.0])
_Q_POS, _Q_POS_ADD = _POS_SCALE, np.array([0.0, 0.0, 1e-2**2, 0.0])
_Q_VEL, _Q_VEL_ADD = _POS_SCALE * (W_VEL / W_POS) ** 2, np.array([0.0, 0.0, 1e-5**2, 0.0])
_R_ADD = np.array([0.0, 0.0, 1e-1**2, 0.0])
_P0_POS, _P0_VEL = _POS_SCALE * 2**2, _POS_SCALE * (10 * W_VEL / W_POS) ** 2
_EMPTY = np.empty(0, dtype=np.intp)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes (float32, as Ultralytics' bbox_ioa(iou=True) computes it)."""
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2])
    np.maximum(wh, 0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_b + area_a[:, None] - inter + np.float32(1e-7))


def assign(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ultralytics' linear_assignment -> matched rows (ascending), their columns, unmatched rows, unmatched
    columns (both ascending)."""
    n_rows, n_cols = cost.shape
    if n_rows == 0 or n_cols == 0:
        return _EMPTY, _EMPTY, np.arange(n_rows), np.arange(n_cols)
    best = cost.argmin(axis=1)
    ok = cost[np.arange(n_rows), best] < thresh
    picked = best[ok]
    taken = np.bincount(picked, minlength=n_cols)
    if taken.max() <= 1:  # every row gets its cheapest column: that is the optimum
        return ok.nonzero()[0], picked, (~ok).nonzero()[0], (taken == 0).nonzero()[0]
    _, x, y = lap.lapjv(cost, extend_cost=True, cost_limit=thresh)
    matched = (x >= 0).nonzero()[0]
    return matched, x[matched], (x < 0).nonzero()[0], (y < 0).nonzero()[0]


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
        # One row per track, in Ultralytics' pool order (tracked, then lost).
        self.k = np.empty((0, 20))  # Kalman: mean (x, y, a, h, vx, vy, va, vh), then the 2x2 covariance blocks
        self.info = np.empty((0, 5))  # score, cls, last frame seen, first frame, stream id (0: none yet)
        self.state = np.empty(0, dtype=np.int8)
        self.activated = np.empty(0, dtype=bool)
        self.ever_removed = np.empty(0, dtype=bool)

    def _take(self, rows: np.ndarray) -> None:
        self.k, self.info, self.state = self.k[rows], self.info[rows], self.state[rows]
        self.activated, self.ever_removed = self.activated[rows], self.ever_removed[rows]

    # -- Kalman filter (KalmanFilterXYAH, block-diagonal form), on all rows at once --

    def _predict(self, moving: np.ndarray | None) -> None:
        """Predict the rows where `moving` is 1 (all rows when None); the others stay as they are."""
        k = self.k
        q = np.square(k[:, 3:4] * W_POS)  # (N, 1): the height before the step
        qp, qv = q * _Q_POS + _Q_POS_ADD, q * _Q_VEL + _Q_VEL_ADD
        dppp = k[:, PPV] * 2
        dppp += k[:, PVV]
        dppp += qp
        dpos, dppv, dpvv = k[:, VEL], k[:, PVV], qv
        if moving is not None:
            dppp *= moving
            dpos, dppv, dpvv = dpos * moving, dppv * moving, dpvv * moving
        k[:, POS] += dpos
        k[:, PPV] += dppv
        k[:, PVV] += dpvv
        k[:, PPP] += dppp

    def _update(self, rows: np.ndarray, z: np.ndarray) -> None:
        k = self.k[rows]
        pos, ppp, ppv = k[:, POS], k[:, PPP], k[:, PPV]
        s = np.square(pos[:, 3:4] * W_POS) * _POS_SCALE + _R_ADD
        s += ppp
        kp, kv = ppp / s, ppv / s
        innovation = z - pos
        k[:, VEL] += kv * innovation
        k[:, POS] += kp * innovation
        k[:, PVV] -= ppv * kv
        k[:, PPV] -= ppv * kp
        k[:, PPP] -= ppp * kp
        self.k[rows] = k

    @staticmethod
    def _initiate(z: np.ndarray) -> np.ndarray:
        k = np.zeros((len(z), 20))
        h2 = np.square(z[:, 3:4] * W_POS)
        k[:, POS] = z
        k[:, PPP] = h2 * _P0_POS + _Q_POS_ADD
        k[:, PVV] = h2 * _P0_VEL + _Q_VEL_ADD
        return k

    def _xyxy(self, k: np.ndarray) -> np.ndarray:
        h = k[:, 3:4]
        wh = np.concatenate((k[:, 2:3] * h, h), axis=1)
        lt = k[:, 0:2] - wh / 2
        return np.concatenate((lt, lt + wh), axis=1).astype(np.float32)

    # -- one frame --

    def update(self, boxes: np.ndarray) -> tuple[np.ndarray, set[int]]:
        """Track one frame's boxes (N, 6: x1, y1, x2, y2, conf, cls) -> rows (x1, y1, x2, y2, track id, conf,
        cls) of the tracks seen in this frame; and the ids of the tracks still alive (tracked or lost but not
        yet removed)."""
        self.frame += 1
        frame = self.frame
        d = boxes.astype(np.float32, copy=False)
        # Detections as Ultralytics' STrack sees them: xywh -> ltwh (float32), xyah for the filter.
        wh = d[:, 2:4] - d[:, 0:2]
        lt = (d[:, 0:2] + d[:, 2:4]) / 2 - wh / 2
        det_xyxy = np.concatenate((lt, lt + wh), axis=1)
        conf = d[:, 4]
        valid = (wh > 0).all(axis=1)
        hi = (valid & (conf >= self.high)).nonzero()[0]
        lo = (valid & (conf > self.low) & (conf < self.high)).nonzero()[0]

        state, n = self.state, len(self.state)
        tracked = state == TRACKED
        any_lost = not tracked.all()
        unconfirmed = (tracked & ~self.activated).nonzero()[0]
        if len(unconfirmed):
            in_pool = ~tracked | self.activated
            pool = in_pool.nonzero()[0]
            moving = in_pool[:, None].astype(np.float64)
        else:
            pool, moving = np.arange(n), None
        if any_lost:
            self.k[~tracked, 7] = 0.0  # a lost track's height stops changing
        self._predict(moving)
        ious = iou(self._xyxy(self.k), det_xyxy)

        # 1. confident boxes <-> tracked and lost tracks
        pool_ious = ious[pool] if moving is not None else ious
        cost = 1 - (pool_ious if len(hi) == len(d) else pool_ious[:, hi])
        if self.fuse and cost.size:
            cost = 1 - (1 - cost) * conf[hi]
        rows, cols, u_rows, u_cols = assign(cost, self.match)
        t1, u_pool, u_hi = pool[rows], pool[u_rows], hi[u_cols]
        refound = t1[state[t1] != TRACKED] if any_lost else _EMPTY
        upd_t, upd_d = [t1], [hi[cols]]
        # 2. unmatched tracked tracks <-> low-score boxes; the rest are lost
        r_tracked = u_pool[state[u_pool] == TRACKED] if any_lost and len(u_pool) else u_pool
        if len(r_tracked) and len(lo):
            rows, cols, u_rows, _ = assign(1 - ious[r_tracked][:, lo], LOW_MATCH_THRESH)
            upd_t.append(r_tracked[rows])
            upd_d.append(lo[cols])
            newly_lost = r_tracked[u_rows]
        else:
            newly_lost = r_tracked
        # 3. tracks seen once <-> confident boxes left; unmatched ones are removed
        if len(unconfirmed):
            cost = 1 - ious[unconfirmed][:, u_hi]
            if self.fuse and cost.size:
                cost = 1 - (1 - cost) * conf[u_hi]
            rows, cols, u_rows, u_cols = assign(cost, UNCONFIRMED_MATCH_THRESH)
            upd_t.append(unconfirmed[rows])
            upd_d.append(u_hi[cols])
            dropped = unconfirmed[u_rows]
            left = u_hi[u_cols]
        else:
            dropped, left = _EMPTY, u_hi
        born = left[conf[left] >= self.new]

        # Kalman updates and states.
        ti = np.concatenate(upd_t) if len(upd_t) > 1 else upd_t[0]
        di = np.concatenate(upd_d) if len(upd_d) > 1 else upd_d[0]
        det_xyah = None
        if len(ti) or len(born):
            det_xyah = np.concatenate((lt + wh / 2, wh[:, 0:1] / wh[:, 1:2], wh[:, 1:2]), axis=1).astype(np.float64)
        if len(ti):
            self._update(ti, det_xyah[di])
            self.info[ti, SCORE : CLS + 1] = d[di, 4:6]
            self.info[ti, LAST] = frame
            state[ti] = TRACKED
            self.activated[ti] = True
        state[newly_lost] = LOST
        state[dropped] = REMOVED
        was_lost = ~tracked
        if any_lost:
            stale = (was_lost & (state != TRACKED) & (frame - self.info[:, LAST] > self.buffer)).nonzero()[0]
            state[stale] = REMOVED
            old_removed = (was_lost & self.ever_removed & (state != TRACKED)).any()
        else:
            stale, old_removed = _EMPTY, False

        # Pools in Ultralytics' order: tracked kept, born, refound | lost kept, newly lost.
        if len(born) or len(refound) or len(newly_lost) or len(dropped) or old_removed:
            group = np.full(n, -1, dtype=np.int64)
            group[tracked & (state == TRACKED)] = 0
            group[refound] = 2
            group[was_lost & (state != TRACKED) & ~self.ever_removed] = 3
            group[newly_lost[~self.ever_removed[newly_lost]]] = 4
            self.ever_removed[stale] = True
            order = np.argsort(group * (n + 1) + np.arange(n))
            order = order[group[order] >= 0]
            if len(born):
                cut = int(np.count_nonzero(group[order] == 0))  # born tracks go after the tracked ones kept
                b = len(born)
                info = np.zeros((b, 5))
                info[:, SCORE : CLS + 1] = d[born, 4:6]
                info[:, LAST : START + 1] = frame
                self.k = np.concatenate((self.k[order[:cut]], self._initiate(det_xyah[born]), self.k[order[cut:]]))
                self.info = np.concatenate((self.info[order[:cut]], info, self.info[order[cut:]]))
                self.state = np.concatenate((state[order[:cut]], np.full(b, TRACKED, np.int8), state[order[cut:]]))
                self.activated = np.concatenate(
                    (self.activated[order[:cut]], np.full(b, frame == 1), self.activated[order[cut:]])
                )
                self.ever_removed = np.concatenate(
                    (self.ever_removed[order[:cut]], np.zeros(b, bool), self.ever_removed[order[cut:]])
                )
            else:
                self._take(order)
        elif len(stale):
            self.ever_removed[stale] = True

        self._drop_duplicates()
        return self._output()

    def _drop_duplicates(self) -> None:
        """Ultralytics' remove_duplicate_stracks: a tracked and a lost track on the same spot (IoU > 0.85)
        -> the one tracked for fewer frames goes (the tracked one on a tie)."""
        lost = self.state != TRACKED
        if not lost.any() or lost.all():
            return
        a, b = (~lost).nonzero()[0], lost.nonzero()[0]
        xyxy = self._xyxy(self.k)
        p, q = (1 - iou(xyxy[a], xyxy[b]) < DUPLICATE_IOU_DIST).nonzero()
        if not len(p):
            return
        age = self.info[:, LAST] - self.info[:, START]
        a_older = age[a[p]] > age[b[q]]
        keep = np.ones(len(self.state), dtype=bool)
        keep[b[q[a_older]]] = False
        keep[a[p[~a_older]]] = False
        self._take(keep)

    def _output(self) -> tuple[np.ndarray, set[int]]:
        out = ((self.state == TRACKED) & self.activated).nonzero()[0]
        info = self.info
        sid = info[:, SID]
        if not sid[out].all():
            for i in out[sid[out] == 0].tolist():
                sid[i] = self.allocate()
        rows = np.concatenate((self._xyxy(self.k[out]), info[out][:, _OUT_COLS]), axis=1)
        return rows, set(sid[sid > 0].astype(np.int64).tolist())
