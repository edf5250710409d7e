"""Encoded worker results built from boxes, for tests and benchmarks of what reads results."""

from __future__ import annotations

import time

from common.wire import Result, encode_result


def encoded_result(stream: str, seq: int, boxes: list, *, w: int, h: int, model: str) -> bytes:
    """The result a worker would publish for frame `seq` (two frames a batch), stamped now; each box
    [x1, y1, x2, y2, conf, cls] with its class as an int."""
    t = time.time()
    boxes = [[*b[:5], int(b[5])] for b in boxes]
    return encode_result(
        Result(stream=stream, seq=seq, batch=seq // 2, t_capture=t, t_enqueue=t, t_start=t, t_done=t, worker="w",
               gpu="cpu", model=model, w=w, h=h, boxes=boxes)
    )  # fmt: skip
