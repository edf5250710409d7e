"""Read results: live from pub/sub, and recent ones replayed from each stream's history."""

from __future__ import annotations

import time
from collections.abc import Iterator

import redis

from common import keys
from common.errors import SchemaError
from common.replies import texts
from common.wire import Result, TrackedFrame, decode_result, unpackb


class Subscriber:
    def __init__(self, client: redis.Redis, streams: list[str]) -> None:
        self.client = client
        self.streams = [keys.check_stream_id(s) for s in streams]
        self.bad_messages = 0

    def class_names(self, model: str) -> list[str]:
        raw = self.client.get(keys.model_names(model))
        return list(unpackb(raw)) if raw else []

    def replay(self, stream: str, count: int) -> list[Result]:
        """Up to `count` most recent results of `stream`, oldest first."""
        entries = self.client.xrevrange(keys.history(stream), count=count) or []
        out = []
        for _id, fields in reversed(entries):
            try:
                out.append(decode_result((fields or {})[b"r"]))
            except (SchemaError, KeyError):
                self.bad_messages += 1
        return out

    def results(self, *, replay: int = 0, deadline: float | None = None) -> Iterator[Result]:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        if self.streams:
            pubsub.subscribe(*[keys.results_channel(s) for s in self.streams])
        else:
            pubsub.psubscribe(keys.results_pattern())
        last_seq: dict[str, int] = {}
        try:
            if replay:
                streams = self.streams or texts(self.client.smembers(keys.STREAMS))
                for stream in streams:
                    for result in self.replay(stream, replay):
                        last_seq[stream] = max(last_seq.get(stream, -1), result.seq)
                        yield result
            while deadline is None or time.monotonic() < deadline:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
                if message is None or message["type"] not in ("message", "pmessage"):
                    continue
                try:
                    result = decode_result(message["data"])
                except SchemaError:
                    self.bad_messages += 1
                    continue
                if result.seq <= last_seq.get(result.stream, -1) and replay:
                    continue
                yield result
        finally:
            pubsub.close()

    @staticmethod
    def describe(result: Result, names: list[str]) -> str:
        parts = []
        for x1, y1, x2, y2, conf, cls in result.boxes:
            label = names[int(cls)] if 0 <= cls < len(names) else str(cls)
            parts.append(f"{label} {conf:.2f} [{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}]")
        return f"{result.stream} #{result.seq} {result.latency_ms:.0f} ms {result.worker}: " + (", ".join(parts) or "-")


def describe_tracked(frame: TrackedFrame, names: list[str]) -> str:
    """A tracked frame as one line, like a result's: `door #12: #3 circle 0.91 [x1,y1,x2,y2] in entrance, ...`."""
    parts = []
    for b in frame.boxes:
        label = names[b.cls] if 0 <= b.cls < len(names) else str(b.cls)
        where = f" in {'+'.join(b.zones)}" if b.zones else ""
        parts.append(f"#{b.track} {label} {b.conf:.2f} [{b.x1:.0f},{b.y1:.0f},{b.x2:.0f},{b.y2:.0f}]{where}")
    return f"{frame.stream} #{frame.seq}: " + (", ".join(parts) or "-")
