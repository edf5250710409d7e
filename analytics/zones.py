"""Zones, lines and dwell over tracks: which zones a box is in and the events a frame makes.

A track's position is the bottom centre of its box (where an object touches the ground), in
normalized coordinates. Lines are directed a -> b: `direction` is "in" when the point moves from
the side where cross(b - a, p - a) > 0 to the side where it is < 0 (a line drawn top to bottom is
crossed "in" from left to right), "out" the other way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from common.analytics_settings import AnalyticsSettings

Point = tuple[float, float]


def inside(polygon: list[Point], x: float, y: float) -> bool:
    """Even-odd rule (plain Python: faster than NumPy for a few vertices); points on an edge count as
    inside on one side only, so an entry is counted once."""
    result = False
    xj, yj = polygon[-1]
    for xi, yi in polygon:
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            result = not result
        xj, yj = xi, yi
    return result


def _side(a: Point, b: Point, p: Point) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def crossing(a: Point, b: Point, p0: Point, p1: Point) -> str | None:
    """'in' / 'out' when the move p0 -> p1 crosses segment a -> b, else None."""
    s0, s1 = _side(a, b, p0), _side(a, b, p1)
    if s0 == 0 or (s0 > 0) == (s1 > 0) or s1 == 0 and s0 < 0:
        return None
    t0, t1 = _side(p0, p1, a), _side(p0, p1, b)
    if (t0 > 0) == (t1 > 0) and t0 != 0 and t1 != 0:
        return None  # the move crosses the line's extension, not the segment
    return "in" if s0 > 0 else "out"


@dataclass
class TrackState:
    cls: int
    point: Point
    zones: dict[str, float] = field(default_factory=dict)  # zone -> time entered
    dwelt: set[str] = field(default_factory=set)


class Rules:
    """One stream's zones, lines and dwell rule, with the state of its live tracks."""

    def __init__(self, settings: AnalyticsSettings) -> None:
        self.zones = {z.name: [(float(x), float(y)) for x, y in z.points] for z in settings.zones}
        self.lines: dict[str, tuple[Point, Point]] = {
            ln.name: ((ln.points[0][0], ln.points[0][1]), (ln.points[1][0], ln.points[1][1])) for ln in settings.lines
        }
        self.dwell_s = settings.dwell_s
        self.tracks: dict[int, TrackState] = {}
        self.counts = dict.fromkeys(self.zones, 0)

    def step(self, rows: np.ndarray, alive: set[int], w: int, h: int, t: float) -> tuple[list[list[str]], list[dict]]:
        """Rows of one tracked frame -> (zones of each row, events). Events are dicts without stream/seq.

        A zone's count is the tracked boxes in it on this frame: a track the tracker lost (kept in its
        buffer, not in `rows`) leaves its zones at once (`left` with `why: "lost"`), and enters them again
        if it is found."""
        events: list[dict] = []
        in_zones: list[list[str]] = []
        points: list[tuple[int, int, Point]] = []
        counts = dict.fromkeys(self.zones, 0)
        for x1, _y1, x2, y2, tid_f, _conf, cls_f in rows.tolist():
            p = ((x1 + x2) / 2 / w, y2 / h)
            now_in = [name for name, poly in self.zones.items() if inside(poly, *p)]
            for name in now_in:
                counts[name] += 1
            points.append((int(tid_f), int(cls_f), p))
            in_zones.append(now_in)
        self.counts = counts
        present = set()
        for (tid, cls, p), now_in in zip(points, in_zones, strict=True):
            present.add(tid)
            st = self.tracks.get(tid)
            if st is None:
                st = self.tracks[tid] = TrackState(cls, p)
                events.append({"type": "appeared", "track": tid, "cls": cls})
            else:
                for name, (a, b) in self.lines.items():
                    direction = crossing(a, b, st.point, p)
                    if direction:
                        events.append(
                            {"type": "crossed", "track": tid, "cls": cls, "line": name, "direction": direction}
                        )
            st.point, st.cls = p, cls
            for name in now_in:
                if name not in st.zones:
                    st.zones[name] = t
                    events.append({"type": "entered", "track": tid, "cls": cls, "zone": name, "count": counts[name]})
                elif self.dwell_s is not None and name not in st.dwelt and t - st.zones[name] >= self.dwell_s:
                    st.dwelt.add(name)
                    events.append(
                        {
                            "type": "dwell",
                            "track": tid,
                            "cls": cls,
                            "zone": name,
                            "dwell_s": round(t - st.zones[name], 3),
                        }
                    )
            for name in [z for z in st.zones if z not in now_in]:
                events.append(self._leave(tid, st, name, "left"))
        for tid, st in list(self.tracks.items()):
            if tid in present:
                continue
            for name in list(st.zones):
                events.append(self._leave(tid, st, name, "lost"))
            if tid not in alive:
                del self.tracks[tid]
                events.append({"type": "lost", "track": tid, "cls": st.cls})
        return in_zones, events

    def _leave(self, tid: int, st: TrackState, name: str, why: str) -> dict:
        del st.zones[name]
        st.dwelt.discard(name)
        return {"type": "left", "track": tid, "cls": st.cls, "zone": name, "count": self.counts[name], "why": why}
