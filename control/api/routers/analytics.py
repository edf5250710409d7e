"""Analytics: recent events (filter by stream and type) and the snapshot of an event's frame."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import cv2
import numpy as np
import redis
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from analytics.feed import recent_events
from common import keys
from common.keys import STREAM_ID_PATTERN
from common.wire import unpackb

EventType = Literal["appeared", "lost", "entered", "left", "crossed", "dwell"]
StreamId = Annotated[str, Path(pattern=STREAM_ID_PATTERN)]


def draw_boxes(jpeg: bytes, w: int, h: int, boxes: list[list[float]]) -> bytes:
    """The JPEG with boxes (given in the camera frame's pixels) drawn at the JPEG's own scale."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise HTTPException(status_code=500, detail="the stored snapshot is not a readable JPEG")
    sx, sy = img.shape[1] / w, img.shape[0] / h
    for x1, y1, x2, y2, *_ in boxes:
        cv2.rectangle(img, (int(x1 * sx), int(y1 * sy)), (int(x2 * sx), int(y2 * sy)), (0, 255, 0), 2)
    ok, out = cv2.imencode(".jpg", img)
    if not ok:
        raise HTTPException(status_code=500, detail="could not encode the snapshot")
    return out.tobytes()


def make_router(client: redis.Redis) -> APIRouter:
    router = APIRouter()

    @router.get("/events")
    def events(
        stream: Annotated[str | None, Query(pattern=STREAM_ID_PATTERN)] = None,
        type: EventType | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Recent events, newest first: entered/left (zone), crossed (line, direction), dwell, appeared/lost."""
        return recent_events(client, stream=stream, kind=type, limit=limit)

    @router.get(
        "/snapshot/{stream}/{seq}",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such snapshot (expired?)"}},
    )
    def snapshot(stream: StreamId, seq: Annotated[int, Path(ge=0)], boxes: bool = False) -> Response:
        """The JPEG of frame `seq` of a stream with snapshots on (kept for events); `?boxes=1` draws the boxes."""
        raw = client.get(keys.snapshot(stream, seq))
        if raw is None:
            raise HTTPException(status_code=404, detail=f"no snapshot of {stream} frame {seq} (expired or never kept)")
        snap = unpackb(raw)
        jpeg = snap["jpeg"]
        if boxes:
            jpeg = draw_boxes(jpeg, int(snap["w"]), int(snap["h"]), snap.get("boxes") or [])
        return Response(content=jpeg, media_type="image/jpeg")

    return router
