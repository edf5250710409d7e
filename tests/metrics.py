"""Box matching for accuracy assertions: greedy by IoU, same class."""

from __future__ import annotations

from collections.abc import Sequence

Box = Sequence[float]  # x1, y1, x2, y2, ...


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(pred: list[tuple[int, Box]], truth: list[tuple[int, Box]], threshold: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of pred against truth at an IoU threshold."""
    pairs = sorted(
        ((iou(p, t), i, j) for i, (pc, p) in enumerate(pred) for j, (tc, t) in enumerate(truth) if pc == tc),
        reverse=True,
    )
    used_p, used_t = set(), set()
    for score, i, j in pairs:
        if score < threshold:
            break
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
    tp = len(used_p)
    return tp, len(pred) - tp, len(truth) - tp
