"""Snapshots: for a stream that asks, each frame's JPEG (which the worker has anyway) is kept briefly,
with its size and boxes, so the tracking stage can keep the frame of an event longer (EXPIRE)."""

from __future__ import annotations

import logging

import redis

from common import keys
from common.redis_client import describe, write_rejected
from common.wire import Frame, Snapshot, encode_snapshot, unpackb

log = logging.getLogger(__name__)


def keep_snapshots(client: redis.Redis, stream: str, frames: list[Frame], messages: list[bytes]) -> None:
    """A snapshot is a nicety: when Redis refuses the write (full), skip it."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for frame, message in zip(frames, messages, strict=True):
                if frame.enc != "jpeg":
                    continue
                boxes = unpackb(message)["boxes"]
                value = encode_snapshot(Snapshot(w=frame.w, h=frame.h, jpeg=frame.data, boxes=boxes))
                pipe.set(keys.snapshot(stream, frame.seq), value, ex=keys.SNAPSHOT_PENDING_TTL_S)
            pipe.execute()
    except redis.ResponseError as exc:
        if not write_rejected(exc):
            raise
        log.warning("snapshots of %s not kept: %s", stream, describe(exc))
