"""Analytics: recent events (filter by stream and type) and the snapshot of an event's frame.

What is stored is not trusted: an event-log entry that is not an event is skipped (counted in the
`X-RTAI-Skipped` header), and a snapshot's JPEG header is checked against the workers' pixel cap before
it is decoded (a forged header claiming 30000x30000 is refused, never allocated); boxes that are not
finite numbers are skipped, the rest clamped to the image."""

from __future__ import annotations

import math
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from analytics.eventlog import read_recent
from common import keys
from common.analytics_settings import EventType
from common.errors import FrameDecodeError, RecordError
from common.images import jpeg_size
from common.keys import STREAM_ID_PATTERN
from common.shards import Fleet, client_for
from common.wire import MAX_FRAME_PIXELS, MAX_SIDE, decode_snapshot

StreamId = Annotated[str, Path(pattern=STREAM_ID_PATTERN)]


def _box_corners(box: object, sx: float, sy: float, iw: int, ih: int) -> tuple[int, int, int, int] | None:
    """A stored box scaled to the JPEG and clamped to it; None when it is not four finite numbers."""
    if not isinstance(box, list | tuple) or len(box) < 4:
        return None
    coords = box[:4]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in coords):
        return None
    x1, y1, x2, y2 = coords
    return (
        int(min(max(x1 * sx, 0), iw - 1)),
        int(min(max(y1 * sy, 0), ih - 1)),
        int(min(max(x2 * sx, 0), iw - 1)),
        int(min(max(y2 * sy, 0), ih - 1)),
    )


def draw_boxes(jpeg: bytes, w: object, h: object, boxes: object) -> bytes:
    """The JPEG with boxes (given in the camera frame's pixels) drawn at the JPEG's own scale.

    The JPEG's header is read first: over the workers' pixel cap it is refused undecoded. A frame size
    that is not 1..MAX_SIDE draws the boxes unscaled."""
    try:
        width, height = jpeg_size(jpeg)
    except FrameDecodeError as exc:
        raise HTTPException(status_code=500, detail=f"the stored snapshot is not a readable JPEG: {exc}") from exc
    if width * height > MAX_FRAME_PIXELS or not width or not height:
        raise HTTPException(
            status_code=500, detail=f"the stored snapshot claims {width}x{height} pixels: not decoded (a forgery?)"
        )
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise HTTPException(status_code=500, detail="the stored snapshot is not a readable JPEG")
    ih, iw = img.shape[:2]
    sane = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in (w, h))
    sx, sy = (iw / w, ih / h) if sane else (1.0, 1.0)
    for box in boxes if isinstance(boxes, list) else []:
        corners = _box_corners(box, sx, sy, iw, ih)
        if corners is not None:
            cv2.rectangle(img, corners[:2], corners[2:], (0, 255, 0), 2)
    ok, out = cv2.imencode(".jpg", img)
    if not ok:
        raise HTTPException(status_code=500, detail="could not encode the snapshot")
    return out.tobytes()


def make_router(fleet: Fleet) -> APIRouter:
    router = APIRouter()

    @router.get("/events")
    def events(
        response: Response,
        stream: Annotated[str | None, Query(pattern=STREAM_ID_PATTERN)] = None,
        type: EventType | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Recent events, newest first: entered/left (zone), crossed (line, direction), dwell, appeared/lost.

        `X-RTAI-Skipped`: log entries skipped as not events; `X-RTAI-Scan-Stopped: 1` when the scan ended at
        its depth with fewer than `limit` matches (older matching events may exist); `X-RTAI-Shards-Unreachable`:
        Redis shards that did not answer, whose events are missing."""
        recent = read_recent(fleet, stream=stream, kind=type, limit=limit)
        if recent.skipped:
            response.headers["X-RTAI-Skipped"] = str(recent.skipped)
        if recent.scan_stopped:
            response.headers["X-RTAI-Scan-Stopped"] = "1"
        if recent.unreachable:
            response.headers["X-RTAI-Shards-Unreachable"] = str(recent.unreachable)
        return recent.events

    @router.get(
        "/snapshot/{stream}/{seq}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such snapshot (expired?)"}},
    )
    def snapshot(stream: StreamId, seq: Annotated[int, Path(ge=0)], boxes: bool = False) -> Response:
        """The JPEG of frame `seq` of a stream with snapshots on (kept for events); `?boxes=1` draws the boxes."""
        raw = client_for(fleet, stream).get(keys.snapshot(stream, seq))
        if raw is None:
            raise HTTPException(status_code=404, detail=f"no snapshot of {stream} frame {seq} (expired or never kept)")
        try:
            snap = decode_snapshot(raw)
        except RecordError as exc:
            raise HTTPException(status_code=500, detail=f"the stored snapshot is unreadable: {exc}") from exc
        jpeg = snap.jpeg
        if boxes:
            jpeg = draw_boxes(jpeg, snap.w, snap.h, snap.boxes)
        return Response(content=jpeg, media_type="image/jpeg")

    return router
