"""The live view's one push source: previews matched to results, and the fleet's state each second.

One LiveFeed per API process, shared by every open page: one pattern subscription (redis.asyncio)
to every stream's results and previews, one fleet snapshot a second. Each event is serialised once
and handed to every page's queue, so a page costs a queue, not Redis calls. The API never decodes
video: a preview's JPEG goes to the page as it came from the producer.

A stream with tracking on (its analytics settings say `track`) is drawn from the tracking stage's
tracked frames (`rtai:tracks:<stream>`: boxes with track ids and zones) matched to the preview by
seq; when no tracked frame came TRACK_WAIT_S after the frame's result (no tracker running, or the
frame was skipped for tracking), the result's boxes go out instead. Its events are pushed to the
stream's page as they are published.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from analytics.feed import recent_events
from common import desired, keys
from common.analytics_settings import AnalyticsSettings
from common.errors import SchemaError
from common.replies import text_map
from common.wire import decode_result, unpackb
from control import status

log = logging.getLogger(__name__)

#: Fleet state goes out about once a second.
FLEET_EVERY_S = 1.0
#: A preview waits for its result this long (a busy CPU fleet publishes seconds late): the view lags
#: by the fleet's latency, and every picture shows the boxes found on it.
MATCH_WAIT_S = 15.0
#: When no matched frame went out for this long (no worker, or a long backlog), the newest preview
#: goes out without boxes (boxes: null) so the tile stays live.
BARE_AFTER_S = 2.0
#: A tracked stream's frame goes out with its plain result when its tracked frame is this late
#: (the tracker's reorder wait is 1 s by default).
TRACK_WAIT_S = 3.0
#: Results (and tracked frames) kept per stream to match a preview that arrives after them.
RESULTS_KEPT = 256
#: Previews waiting for their result, per stream (10 a second for MATCH_WAIT_S).
PENDING_KEPT = 160
#: A slow page loses events rather than holding memory: its queue is bounded.
PAGE_QUEUE = 64
#: Worker heartbeat fields the page shows.
WORKER_FIELDS = (
    "device",
    "gpu",
    "gpu_name",
    "host",
    "state",
    "reason",
    "fps",
    "frames",
    "gpu_utilization_pct",
    "gpu_memory_used_mb",
    "gpu_memory_total_mb",
    "gpu_temperature_c",
    "gpu_power_w",
)
#: Recent events a stream page gets when it opens.
EVENTS_ON_OPEN = 20


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Page:
    """One open EventSource: the stream it follows (None: every stream, the overview)."""

    stream: str | None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(PAGE_QUEUE))

    def put(self, chunk: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(chunk)


class LiveFeed:
    def __init__(self, redis_url: str, client: redis.Redis) -> None:
        self.redis_url = redis_url
        self.client = client
        self.pages: set[Page] = set()
        self.fleet_chunk: bytes | None = None
        self.last_frame: dict[str, bytes] = {}
        self._results: dict[str, OrderedDict[int, tuple[float, dict]]] = {}  # seq -> (arrived, result)
        self._tracks: dict[str, OrderedDict[int, dict]] = {}  # seq -> tracked frame
        self.tracking: frozenset[str] = frozenset()  # streams with tracking on (from the fleet snapshot)
        self._pending: dict[str, OrderedDict[int, tuple[float, dict]]] = {}
        self._tasks: list[asyncio.Task] = []
        self._matched: dict[str, tuple[int, float]] = {}  # stream -> (seq, monotonic time) last sent with boxes
        self._bare_at: dict[str, float] = {}

    # -- pages -------------------------------------------------------------------------------
    def open(self, stream: str | None) -> Page:
        page = Page(stream)
        self.pages.add(page)
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._tick())]
        if self.fleet_chunk:
            page.put(self.fleet_chunk)
        for sid, chunk in self.last_frame.items():
            if stream in (None, sid):
                page.put(chunk)
        return page

    def close(self, page: Page) -> None:
        self.pages.discard(page)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _send_frame(self, stream: str, chunk: bytes) -> None:
        self.last_frame[stream] = chunk
        for page in list(self.pages):
            if page.stream in (None, stream):
                page.put(chunk)

    # -- previews and results ------------------------------------------------------------------
    async def _listen(self) -> None:
        handlers = [
            (keys.results_channel("").encode(), self._on_result),
            (keys.preview_channel("").encode(), self._on_preview),
            (keys.tracks_channel("").encode(), self._on_tracked),
            (keys.events_channel("").encode(), self._on_event),
        ]
        patterns = (keys.results_pattern(), keys.previews_pattern(), keys.tracks_pattern(), keys.events_pattern())
        while True:
            conn = aioredis.from_url(self.redis_url)
            try:
                async with conn.pubsub() as ps:
                    await ps.psubscribe(*patterns)
                    async for msg in ps.listen():
                        if msg["type"] != "pmessage":
                            continue
                        channel: bytes = msg["channel"]
                        for prefix, handler in handlers:
                            if channel.startswith(prefix):
                                handler(channel[len(prefix) :].decode(), msg["data"])
                                break
            except (redis.RedisError, OSError) as exc:
                log.warning("live view: Redis subscription lost (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
            finally:
                await conn.aclose()

    def _on_result(self, stream: str, data: bytes) -> None:
        try:
            result = decode_result(data).to_map()
        except SchemaError:
            return
        seq = int(result["seq"])
        _keep(self._results.setdefault(stream, OrderedDict()), seq, (time.monotonic(), result))
        self._match(stream, seq)

    def _on_tracked(self, stream: str, data: bytes) -> None:
        try:  # [x1, y1, x2, y2, conf, cls, track id, [zone, ...]] per box (README, Analytics)
            raw = unpackb(data)
            seq, boxes = int(raw["seq"]), raw.get("boxes") or []
            tracked = {
                "model": raw.get("model"),
                "latency_ms": round((float(raw["t_tracked"]) - float(raw["t_capture"])) * 1000, 1),
                "boxes": [[round(float(v), 2) for v in box[:6]] for box in boxes],
                "tracks": [int(box[6]) for box in boxes],
                "zones": [[str(z) for z in box[7]] for box in boxes],
            }
        except (SchemaError, KeyError, TypeError, ValueError, IndexError):
            return  # not a tracking stage's frame: drawn with its result instead
        _keep(self._tracks.setdefault(stream, OrderedDict()), seq, tracked)
        self._match(stream, seq)

    def _on_preview(self, stream: str, data: bytes) -> None:
        try:
            preview = unpackb(data)
            seq = int(preview["seq"])
        except (SchemaError, KeyError, TypeError, ValueError):
            return
        pending = self._pending.setdefault(stream, OrderedDict())
        pending[seq] = (time.monotonic(), preview)
        while len(pending) > PENDING_KEPT:
            pending.popitem(last=False)
        self._match(stream, seq)

    def _match(self, stream: str, seq: int, now: float | None = None) -> bool:
        """Send the pending preview `seq` once what it is drawn with is here: its tracked frame on a
        tracked stream (or its result once the tracked frame is TRACK_WAIT_S late), else its result."""
        pending = self._pending.get(stream)
        if not pending or seq not in pending:
            return False
        tracks = self._tracks.setdefault(stream, OrderedDict())
        results = self._results.setdefault(stream, OrderedDict())
        tracked = tracks.get(seq)
        arrived, result = results.get(seq, (0.0, None))
        if tracked is None:
            if result is None:
                return False
            late = (time.monotonic() if now is None else now) - arrived > TRACK_WAIT_S
            if stream in self.tracking and not late:
                return False
        _t, preview = pending.pop(seq)
        results.pop(seq, None)
        tracks.pop(seq, None)
        self._send_matched(stream, preview, result, tracked)
        return True

    def _send_matched(self, stream: str, preview: dict, result: dict | None, tracked: dict | None) -> None:
        seq = int(preview["seq"])
        if seq <= self._matched.get(stream, (-1, 0.0))[0]:
            return  # an older frame than the one on screen: never step back
        self._matched[stream] = (seq, time.monotonic())
        self._send_frame(stream, self._frame_chunk(stream, preview, result, tracked))

    def _on_event(self, stream: str, data: bytes) -> None:
        """An event (JSON text, as published) goes to the pages of its stream, not to the overview."""
        try:
            event = json.loads(data)
        except ValueError:
            return
        chunk = sse("event", event)
        for page in list(self.pages):
            if page.stream == stream:
                page.put(chunk)

    def recent_events(self, stream: str) -> bytes:
        """The stream's newest events, newest first, for a stream page that opens (plain Redis calls)."""
        try:
            return sse("events", recent_events(self.client, stream=stream, limit=EVENTS_ON_OPEN))
        except redis.RedisError as exc:
            log.warning("live view: recent events of %s unreadable: %s", stream, exc)
            return sse("events", [])

    def _flush_unmatched(self) -> None:
        """Drop previews whose result never came; keep a tile live when no matched frame went out lately."""
        now = time.monotonic()
        for stream, pending in self._pending.items():
            for seq in [seq for seq, (t, _p) in pending.items() if t < now - MATCH_WAIT_S]:
                del pending[seq]
            if stream in self.tracking:  # results whose tracked frame is late go out plain
                for seq in [seq for seq in pending if seq in self._results.get(stream, {})]:
                    self._match(stream, seq, now)
            quiet = now - max(self._matched.get(stream, (-1, 0.0))[1], self._bare_at.get(stream, 0.0))
            if pending and quiet > BARE_AFTER_S:
                self._bare_at[stream] = now
                _t, preview = pending[next(reversed(pending))]
                self._send_frame(stream, self._frame_chunk(stream, preview, None))

    @staticmethod
    def _frame_chunk(stream: str, preview: dict, result: dict | None, tracked: dict | None = None) -> bytes:
        data: dict[str, Any] = {
            "stream": stream,
            "seq": int(preview["seq"]),
            "w": preview.get("w"),
            "h": preview.get("h"),
            "t": preview.get("t"),
            "jpeg": base64.b64encode(preview["jpeg"]).decode(),
            "boxes": None,
        }
        if result is not None and tracked is None:
            data["boxes"] = [[round(float(v), 2) for v in box] for box in result["boxes"]]
            data["model"] = result.get("model")
            data["latency_ms"] = round((result["t_done"] - result["t_capture"]) * 1000, 1)
            data["worker"] = result.get("worker")
        if tracked is not None:  # boxes, tracks (an id per box), zones (the zones each box is in)
            data.update(tracked)
        return sse("frame", data)

    # -- fleet state ---------------------------------------------------------------------------
    async def _tick(self) -> None:
        next_fleet = 0.0
        while True:
            self._flush_unmatched()
            now = time.monotonic()
            if now >= next_fleet and self.pages:
                next_fleet = now + FLEET_EVERY_S
                watched = {p.stream for p in self.pages if p.stream}
                try:
                    snapshot = await asyncio.to_thread(self.snapshot, watched)
                except redis.RedisError as exc:
                    snapshot = {"t": time.time(), "error": f"Redis unreachable: {exc}"}
                self.fleet_chunk = sse("fleet", snapshot)
                for page in list(self.pages):
                    page.put(self.fleet_chunk)
            await asyncio.sleep(0.1)

    def snapshot(self, watched: set[str]) -> dict[str, Any]:
        """The fleet as the page shows it (runs in a thread: plain Redis calls)."""
        c = self.client
        for sid in watched:
            if keys.STREAM_ID_RE.match(sid):
                c.set(keys.preview_watch(sid), 1, ex=keys.PREVIEW_WATCH_TTL_S)
        report = status.collect(c)
        wanted = set(desired.streams(c))
        streams, models = {}, set()
        for sid, s in report["streams"].items():
            if sid not in wanted and s["state"] in ("stopped", "unknown"):
                continue  # stopped and no longer declared: its tile goes away
            info = text_map(c.hgetall(keys.stream(sid)))
            gpus = {k: int(v) for k, v in text_map(c.hgetall(keys.stream_gpus(sid))).items()}
            streams[sid] = {
                "state": s["state"],
                "reason": s["reason"],
                "model": s["model"],
                "fps_in": float(info.get("fps_in") or 0),
                "fps_out": s["fps_out"],
                "p50": s["latency_ms"]["p50"],
                "p99": s["latency_ms"]["p99"],
                "ledger": s["ledger"],
                "queue_depth": s["queue_depth"],
                "gpus": gpus,
                **self._scene(sid, info.get("analytics")),
            }
            models.add(s["model"])
        self.tracking = frozenset(sid for sid, s in streams.items() if s.get("tracking"))
        names = {}
        for model in models:
            raw = c.get(keys.model_names(model)) if model else None
            if raw:
                with contextlib.suppress(SchemaError):
                    names[model] = unpackb(raw)
        workers = {
            name: {**{k: w[k] for k in WORKER_FIELDS if k in w}, "alive": w["alive"]}
            for name, w in report["workers"].items()
        }
        return {"t": time.time(), "streams": streams, "workers": workers, "names": names}

    def _scene(self, sid: str, analytics: str | None) -> dict[str, Any]:
        """Tracking, zones and lines (normalized points) from the stream's analytics settings (JSON in
        its hash), with the live zone counts and event count; nothing for a stream without them."""
        if not analytics:
            return {}
        try:
            settings = AnalyticsSettings.model_validate_json(analytics)
        except ValueError:
            return {}
        counts = text_map(self.client.hgetall(keys.zone_counts(sid)))
        events = text_map(self.client.hgetall(keys.event_counts(sid)))
        return {
            "tracking": settings.track is not None,
            "zones": [{"name": z.name, "points": z.points} for z in settings.zones],
            "lines": [{"name": ln.name, "points": ln.points} for ln in settings.lines],
            "zone_counts": {k: int(v) for k, v in counts.items()},
            "events": sum(int(v) for v in events.values()),
        }


def _keep(kept: OrderedDict, seq: int, item: Any) -> None:
    kept[seq] = item
    while len(kept) > RESULTS_KEPT:
        kept.popitem(last=False)
