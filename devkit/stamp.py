"""Read the capture time that `scripts/rtsp_server.py --stamp` burns into each frame."""

from __future__ import annotations

import numpy as np

#: Keep in step with scripts/rtsp_server.py.
STAMP_BITS = 48
STAMP_ROWS = 16


def read_stamp(image: np.ndarray) -> int | None:
    """The frame's wall time in ms since the epoch, from its top stripe (BGR or gray, at any scale
    of the served frame); None when the stripe does not read as a plausible time."""
    gray = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    h, w = gray.shape
    scale = h / 480 if h else 1  # the stripe is STAMP_ROWS of the served height; sample its middle
    row = gray[max(0, int(STAMP_ROWS * scale * 0.5))]
    block = w // STAMP_BITS  # as the server drew it (frames read at the served size)
    ms = 0
    for i in range(STAMP_BITS):
        x0, x1 = int(i * block + block * 0.3), int(i * block + block * 0.7) + 1
        ms = (ms << 1) | int(row[x0:x1].mean() > 128)
    return ms if 1_500_000_000_000 < ms < 4_000_000_000_000 else None
