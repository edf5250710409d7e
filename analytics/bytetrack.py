"""ByteTrack on arrays: Ultralytics' BYTETracker (same two-stage association, parameters and quirks),
with every track's state in a few NumPy arrays instead of one Python object per track.

Ultralytics' tracker spends its time in per-track Python: an STrack object per detection, an 8x8
Kalman predict/update per track, list joins by id. Here a frame is a fixed number of array operations
whatever the number of tracks:

- The Kalman filter is Ultralytics' KalmanFilterXYAH (state x, y, aspect, height and their velocities;
  the same noise weights). Its initial, process and measurement noises are diagonal and the motion
  couples each coordinate only with its own velocity, so the 8x8 covariance is four independent 2x2
  blocks: one table holds every track's mean and blocks (pos-pos, pos-vel, vel-vel), a column per
  track; predict is one matrix product, update a few element-wise operations. The same filter.
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

# Rows of the Kalman table (one column per track): mean (position x, y, a, h; velocity), covariance blocks.
POS, VEL, PPP, PPV, PVV = slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16), slice(16, 20)
# Rows of the info table.
SCORE, CLS, LAST, START, SID = range(5)
_OUT_ROWS = [SID, SCORE, CLS]

# The predict step is linear in the table: mean += velocity, P = F P F^T blockwise; plus the process noise.
_STEP = np.eye(20)
_STEP[POS, VEL] = _STEP[PPV, PVV] = np.eye(4)
_STEP[PPP, PPV], _STEP[PPP, PVV] = 2 * np.eye(4), np.eye(4)
# Noise terms per coordinate (x, y, aspect, height): the std is a weight times the height, except the
# aspect's, which is constant. Variances = (W_POS * h)^2 * scale + add.
_SCALE = np.array([1.0, 1.0, 0.0, 1.0])
_Q_SCALE, _Q_ADD = np.zeros(20), np.zeros(20)  # process noise on the covariance rows
_Q_SCALE[PPP], _Q_SCALE[PVV] = _SCALE, _SCALE * (W_VEL / W_POS) ** 2
_Q_ADD[10], _Q_ADD[18] = 1e-2**2, 1e-5**2
_Q_SCALE, _Q_ADD = _Q_SCALE[:, None], _Q_ADD[:, None]
_R_SCALE, _R_ADD = _SCALE[:, None], np.array([0.0, 0.0, 1e-1**2, 0.0])[:, None]
_P0_SCALE = np.zeros(20)  # initial covariance
_P0_SCALE[PPP], _P0_SCALE[PVV] = _SCALE * 2**2, _SCALE * (10 * W_VEL / W_POS) ** 2
_P0_SCALE = _P0_SCALE[:, None]
_EMPTY = np.empty(0, dtype=np.intp)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes given as rows x1, y1, x2, y2 (float32, as Ultralytics' bbox_ioa(iou=True) computes it)."""
    wh = np.minimum(a[2:4, :, None], b[2:4, None, :]) - np.maximum(a[0:2, :, None], b[0:2, None, :])
    np.maximum(wh, 0, out=wh)
    inter = wh[0] * wh[1]
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
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
        # One column per track, in Ultralytics' pool order (tracked, then lost).
        self.k = np.empty((20, 0))  # Kalman: mean (x, y, a, h, vx, vy, va, vh), then the 2x2 covariance blocks
        self.info = np.empty((5, 0))  # score, cls, last frame seen, first frame, stream id (0: none yet)
        self.state = np.empty(0, dtype=np.int8)
        self.activated = np.empty(0, dtype=bool)
        self.ever_removed = np.empty(0, dtype=bool)
        self.alive: set[int] = set()  # stream ids of the tracks held (recomputed when tracks come or go)
        self._alive_stale = False

    def _take(self, cols: np.ndarray) -> None:
        self._alive_stale = True
        self.k, self.info, self.state = self.k[:, cols], self.info[:, cols], self.state[cols]
        self.activated, self.ever_removed = self.activated[cols], self.ever_removed[cols]

    # -- Kalman filter (KalmanFilterXYAH, block-diagonal form), all tracks at once --

    def _predict(self, moving: np.ndarray | None) -> None:
        """Predict the tracks where `moving` is True (all when None); the others stay as they are."""
        k = self.k
        step = _STEP @ k
        step += _Q_SCALE * np.square(k[3] * W_POS)  # the noise scales with the height before the step
        step += _Q_ADD
        self.k = step if moving is None else np.where(moving, step, k)

    def _update(self, cols: np.ndarray, z: np.ndarray) -> None:
        k = self.k[:, cols]
        s = _R_SCALE * np.square(k[3] * W_POS)
        s += _R_ADD
        s += k[PPP]
        gain = k[8:16].reshape(2, 4, -1) / s  # pos-pos and pos-vel gains
        mean = k[0:8].reshape(2, 4, -1)
        cov_drop = k[8:16].reshape(2, 4, -1) * gain[0]  # ppp * kp, ppv * kp
        pvv_drop = k[PPV] * gain[1]
        mean += gain * (z - k[POS])
        k[8:16] -= cov_drop.reshape(8, -1)
        k[PVV] -= pvv_drop
        self.k[:, cols] = k

    @staticmethod
    def _initiate(z: np.ndarray) -> np.ndarray:
        k = _P0_SCALE * np.square(z[3] * W_POS)
        k += _Q_ADD
        k[POS] = z
        return k

    @staticmethod
    def _xyxy(k: np.ndarray) -> np.ndarray:
        h = k[3]
        w = k[2] * h
        x1, y1 = k[0] - w / 2, k[1] - h / 2
        return np.array((x1, y1, x1 + w, y1 + h), dtype=np.float32)

    # -- one frame --

    def update(self, boxes: np.ndarray) -> tuple[np.ndarray, set[int]]:
        """Track one frame's boxes (N, 6: x1, y1, x2, y2, conf, cls) -> rows (x1, y1, x2, y2, track id, conf,
        cls) of the tracks seen in this frame; and the ids of the tracks still alive (tracked or lost but not
        yet removed)."""
        self.frame += 1
        frame = self.frame
        d = boxes.T.astype(np.float32)
        # Detections as Ultralytics' STrack sees them: xywh -> ltwh (float32), xyah for the filter.
        wh = d[2:4] - d[0:2]
        lt = (d[0:2] + d[2:4]) / 2 - wh / 2
        det_xyxy = np.concatenate((lt, lt + wh))
        conf = d[4]
        valid = (wh > 0).all(axis=0)
        high = valid & (conf >= self.high)
        if high.all():
            hi, lo = np.arange(len(conf)), _EMPTY
        else:
            hi = high.nonzero()[0]
            lo = (valid & (conf > self.low) & (conf < self.high)).nonzero()[0]

        state, n = self.state, len(self.state)
        tracked = state == TRACKED
        any_lost = not tracked.all()
        unconfirmed = (tracked & ~self.activated).nonzero()[0]
        if len(unconfirmed):
            in_pool = ~tracked | self.activated
            pool, moving = in_pool.nonzero()[0], in_pool
        else:
            pool, moving = np.arange(n), None
        if any_lost:
            self.k[7, ~tracked] = 0.0  # a lost track's height stops changing
        self._predict(moving)
        ious = iou(self._xyxy(self.k), det_xyxy)

        # 1. confident boxes <-> tracked and lost tracks
        pool_ious = ious[pool] if moving is not None else ious
        cost = 1 - (pool_ious if len(hi) == len(conf) else pool_ious[:, hi])
        if self.fuse and cost.size:
            cost = 1 - (1 - cost) * conf[hi]
        rows, cols, u_rows, u_cols = assign(cost, self.match)
        t1, u_pool = (pool[rows], pool[u_rows]) if moving is not None else (rows, u_rows)
        u_hi = hi[u_cols]
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
            left_over = u_hi[u_cols]
        else:
            dropped, left_over = _EMPTY, u_hi
        born = left_over[conf[left_over] >= self.new] if len(left_over) else _EMPTY

        # Kalman updates and states.
        ti = np.concatenate(upd_t) if len(upd_t) > 1 else upd_t[0]
        di = np.concatenate(upd_d) if len(upd_d) > 1 else upd_d[0]
        aspect = wh[0:1] / np.maximum(wh[1:2], np.float32(1e-12))  # (a box with no height is never used)
        det_xyah = np.concatenate((lt + wh / 2, aspect, wh[1:2])).astype(np.float64)
        if len(ti):
            self._update(ti, det_xyah[:, di])
            self.info[SCORE : CLS + 1, ti] = d[4:6, di]
            self.info[LAST, ti] = frame
            state[ti] = TRACKED
            self.activated[ti] = True
        if len(newly_lost):
            state[newly_lost] = LOST
        if len(dropped):
            state[dropped] = REMOVED
        was_lost = ~tracked
        if any_lost:
            stale = (was_lost & (state != TRACKED) & (frame - self.info[LAST] > self.buffer)).nonzero()[0]
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
                info = np.zeros((5, b))
                info[SCORE : CLS + 1] = d[4:6, born]
                info[LAST : START + 1] = frame
                head, tail = order[:cut], order[cut:]
                new_k = self._initiate(det_xyah[:, born])
                self._alive_stale = True
                self.k = np.concatenate((self.k[:, head], new_k, self.k[:, tail]), axis=1)
                self.info = np.concatenate((self.info[:, head], info, self.info[:, tail]), axis=1)
                self.state = np.concatenate((state[head], np.full(b, TRACKED, np.int8), state[tail]))
                self.activated = np.concatenate((self.activated[head], np.full(b, frame == 1), self.activated[tail]))
                self.ever_removed = np.concatenate(
                    (self.ever_removed[head], np.zeros(b, bool), self.ever_removed[tail])
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
        p, q = (1 - iou(xyxy[:, a], xyxy[:, b]) < DUPLICATE_IOU_DIST).nonzero()
        if not len(p):
            return
        age = self.info[LAST] - self.info[START]
        a_older = age[a[p]] > age[b[q]]
        keep = np.ones(len(self.state), dtype=bool)
        keep[b[q[a_older]]] = False
        keep[a[p[~a_older]]] = False
        self._take(keep)

    def _output(self) -> tuple[np.ndarray, set[int]]:
        shown = (self.state == TRACKED) & self.activated
        k, info = self.k, self.info
        if not shown.all():  # else every track is shown (the usual frame): no copies
            out = shown.nonzero()[0]
            k, info = k[:, out], info[:, out]
        sid = info[SID]
        if not sid.all():
            for i in (sid == 0).nonzero()[0].tolist():
                sid[i] = self.allocate()
            self.info[SID, shown] = sid
            self._alive_stale = True
        if self._alive_stale:
            held = self.info[SID]
            self.alive = set(held[held > 0].astype(np.int64).tolist())
            self._alive_stale = False
        rows = np.concatenate((self._xyxy(k), info[_OUT_ROWS])).T
        return rows, self.alive
