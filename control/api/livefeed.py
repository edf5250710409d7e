"""The live view's one push source: previews matched to results, and the fleet's state each second.

One LiveFeed per API process, shared by every open page: one pattern subscription (redis.asyncio)
to every stream's results and previews, one fleet snapshot a second. Each event is serialised once
and handed to every page's queue, so a page costs a queue, not Redis calls. The API never decodes
video: a preview's JPEG goes to the page as it came from the producer.
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

from common import desired, keys
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
#: Results kept per stream to match a preview that arrives after its result.
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
#: Optional stream-hash fields (tracking/zones, issue 10) passed through when present (JSON text).
SCENE_FIELDS = ("zones", "lines", "tracking")


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
        self._results: dict[str, OrderedDict[int, dict]] = {}
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
        results_prefix = keys.results_channel("").encode()
        previews_prefix = keys.preview_channel("").encode()
        while True:
            conn = aioredis.from_url(self.redis_url)
            try:
                async with conn.pubsub() as ps:
                    await ps.psubscribe(keys.results_pattern(), keys.previews_pattern())
                    async for msg in ps.listen():
                        if msg["type"] != "pmessage":
                            continue
                        channel: bytes = msg["channel"]
                        if channel.startswith(results_prefix):
                            self._on_result(channel[len(results_prefix) :].decode(), msg["data"])
                        elif channel.startswith(previews_prefix):
                            self._on_preview(channel[len(previews_prefix) :].decode(), msg["data"])
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
        pending = self._pending.get(stream)
        if pending and seq in pending:
            _t, preview = pending.pop(seq)
            self._send_matched(stream, preview, result)
            return
        kept = self._results.setdefault(stream, OrderedDict())
        kept[seq] = result
        while len(kept) > RESULTS_KEPT:
            kept.popitem(last=False)

    def _on_preview(self, stream: str, data: bytes) -> None:
        try:
            preview = unpackb(data)
            seq = int(preview["seq"])
        except (SchemaError, KeyError, TypeError, ValueError):
            return
        kept = self._results.get(stream)
        result = kept.pop(seq, None) if kept is not None else None
        if result is not None:
            self._send_matched(stream, preview, result)
            return
        pending = self._pending.setdefault(stream, OrderedDict())
        pending[seq] = (time.monotonic(), preview)
        while len(pending) > PENDING_KEPT:
            pending.popitem(last=False)

    def _send_matched(self, stream: str, preview: dict, result: dict) -> None:
        seq = int(preview["seq"])
        if seq <= self._matched.get(stream, (-1, 0.0))[0]:
            return  # an older frame than the one on screen: never step back
        self._matched[stream] = (seq, time.monotonic())
        self._send_frame(stream, self._frame_chunk(stream, preview, result))

    def _flush_unmatched(self) -> None:
        """Drop previews whose result never came; keep a tile live when no matched frame went out lately."""
        now = time.monotonic()
        for stream, pending in self._pending.items():
            for seq in [seq for seq, (t, _p) in pending.items() if t < now - MATCH_WAIT_S]:
                del pending[seq]
            quiet = now - max(self._matched.get(stream, (-1, 0.0))[1], self._bare_at.get(stream, 0.0))
            if pending and quiet > BARE_AFTER_S:
                self._bare_at[stream] = now
                _t, preview = pending[next(reversed(pending))]
                self._send_frame(stream, self._frame_chunk(stream, preview, None))

    @staticmethod
    def _frame_chunk(stream: str, preview: dict, result: dict | None) -> bytes:
        data: dict[str, Any] = {
            "stream": stream,
            "seq": int(preview["seq"]),
            "w": preview.get("w"),
            "h": preview.get("h"),
            "t": preview.get("t"),
            "jpeg": base64.b64encode(preview["jpeg"]).decode(),
            "boxes": None,
        }
        if result is not None:
            data["boxes"] = [[round(float(v), 2) for v in box] for box in result["boxes"]]
            data["model"] = result.get("model")
            data["latency_ms"] = round((result["t_done"] - result["t_capture"]) * 1000, 1)
            data["worker"] = result.get("worker")
            if "tracks" in result:  # a tracking stage's ids, one per box (issue 10), when present
                data["tracks"] = result["tracks"]
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
                **{k: info[k] for k in SCENE_FIELDS if k in info},
            }
            models.add(s["model"])
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
