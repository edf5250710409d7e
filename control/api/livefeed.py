"""The live view's one push source: previews matched to results, and the fleet's state each second.

One LiveFeed per API process, shared by every open page: one pattern subscription (redis.asyncio)
to every stream's results and previews, one fleet snapshot a second. Each event is serialised once
and handed to every page's queue, so a page costs a queue, not Redis calls. The API never decodes
video: a preview's JPEG goes to the page as it came from the producer.

Every message is checked before it is used (a stream id that is one, an integer seq, a JPEG): one that is
not is dropped, counted by reason (`bad_messages`, in the fleet snapshot and GET /live/status) and logged at
warning at most once per BAD_LOG_EVERY_S per reason. The listener and the tick run under a supervisor that
restarts a task that dies, with backoff, so no message and no bug freezes every page. The feed holds at most
MAX_STREAMS streams and forgets one that is no longer shown (removed or stopped) or quiet for
STREAM_IDLE_S; a page that opens gets only the frames of the streams the fleet shows.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis

from analytics.eventlog import recent_events
from common import desired, keys
from common.analytics_settings import AnalyticsSettings
from common.errors import RecordError, SchemaError
from common.redis_client import connect_async, describe
from common.replies import text_map
from common.shards import Fleet, Shards, client_for, home_of, split_urls
from common.subscription import Silence
from common.wire import decode_event, decode_names, decode_preview, decode_result, decode_tracked, record_seq
from control import status

log = logging.getLogger(__name__)

#: Fleet state goes out about once a second.
FLEET_EVERY_S = 1.0
#: The listener's longest wait for a message before it checks its subscription has not gone silent.
LISTEN_WAIT_S = 1.0
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
#: Streams the feed keeps frames and results for: 2,000 stream ids held ~110 MB, never freed.
MAX_STREAMS = 512
#: A stream that sent nothing for this long is forgotten (its tile shows its fleet state, no picture).
STREAM_IDLE_S = 60.0
#: A bad message of one reason is logged at most this often (a flood must not flood the log).
BAD_LOG_EVERY_S = 10.0
#: A dead feed task is restarted after this long, doubled per quick death up to RESTART_MAX_S.
RESTART_MIN_S = 0.1
RESTART_MAX_S = 5.0
#: A task that ran this long before dying starts again from RESTART_MIN_S.
RESTART_RESET_S = 30.0
#: The last frames a new page gets are those of the streams the last fleet snapshot showed, if it is this fresh.
SHOWN_FRESH_S = 5.0

RESULTS_PREFIX = keys.results_channel("").encode()
PREVIEW_PREFIX = keys.preview_channel("").encode()
TRACKS_PREFIX = keys.tracks_channel("").encode()
EVENTS_PREFIX = keys.events_channel("").encode()


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
    def __init__(self, redis_url: str, client: Fleet) -> None:
        """`client`: the one Redis, or every shard (common/shards.py): one listener each."""
        self.redis_url = redis_url
        self.fleet = client
        self.client = home_of(client)
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
        self._seen: OrderedDict[str, float] = OrderedDict()  # stream -> monotonic time of its last message
        self._shown: tuple[float, frozenset[str]] | None = None  # (when, streams the last fleet snapshot showed)
        #: Messages dropped, by reason; feed tasks restarted, by task name.
        self.bad_messages: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self._bad_logged: dict[str, float] = {}

    def status(self) -> dict[str, Any]:
        """What the feed holds and what it dropped (GET /live/status, and the fleet snapshot's `feed`)."""
        return {
            "streams_held": len(self._seen),
            "pages": len(self.pages),
            "bad_messages": dict(self.bad_messages),
            "restarts": dict(self.restarts),
        }

    # -- pages -------------------------------------------------------------------------------
    def open(self, stream: str | None) -> Page:
        page = Page(stream)
        self.pages.add(page)
        if not self._tasks:
            urls = split_urls(self.redis_url)
            self._tasks = [
                *(
                    asyncio.create_task(self._supervise(f"listener{i}" if i else "listener", partial(self._listen, u)))
                    for i, u in enumerate(urls)
                ),
                asyncio.create_task(self._supervise("tick", self._tick)),
            ]
        if self.fleet_chunk:
            page.put(self.fleet_chunk)
        shown = self._shown[1] if self._shown and time.monotonic() - self._shown[0] < SHOWN_FRESH_S else frozenset()
        for sid, chunk in self.last_frame.items():
            if stream in (None, sid) and sid in shown:
                page.put(chunk)
        return page

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a feed task forever: one that dies is logged, counted and restarted with backoff."""
        delay = RESTART_MIN_S
        while True:
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception:  # the feed's outer loop: every page depends on it, so it never stays down
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if time.monotonic() - started > RESTART_RESET_S:
                    delay = RESTART_MIN_S
                log.exception("live view: %s task died (restart %d in %.1f s)", name, self.restarts[name], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)

    def _bad(self, reason: str, channel: bytes, detail: object) -> None:
        self.bad_messages[reason] = self.bad_messages.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._bad_logged.get(reason, -BAD_LOG_EVERY_S) >= BAD_LOG_EVERY_S:
            self._bad_logged[reason] = now
            log.warning(
                "live view: message on %r dropped (%s: %s); %d so far",
                channel[:80],
                reason,
                str(detail)[:200],
                self.bad_messages[reason],
            )

    def receive(self, channel: object, data: object) -> None:
        """One pub/sub message to its handler; a message that is not one is counted, never raised."""
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            self._bad("not bytes", b"?", type(data).__name__)
            return
        handlers: list[tuple[bytes, Callable[[str, bytes], None]]] = [
            (RESULTS_PREFIX, self._on_result),
            (PREVIEW_PREFIX, self._on_preview),
            (TRACKS_PREFIX, self._on_tracked),
            (EVENTS_PREFIX, self._on_event),
        ]
        found = next(((prefix, h) for prefix, h in handlers if channel.startswith(prefix)), None)
        if found is None:
            return
        prefix, handler = found
        try:
            stream = channel[len(prefix) :].decode("ascii")
        except UnicodeDecodeError as exc:
            self._bad("bad channel", channel, exc)
            return
        if not keys.STREAM_ID_RE.match(stream):
            self._bad("bad channel", channel, "not a stream id")
            return
        try:
            handler(stream, data)
        except RecordError as exc:
            self._bad(exc.reason, channel, exc)
        except (SchemaError, KeyError, TypeError, ValueError, OverflowError, RecursionError, IndexError) as exc:
            self._bad("malformed", channel, repr(exc))

    def _touch(self, stream: str) -> None:
        """A message of `stream` came: it is held (the least recently heard stream goes past MAX_STREAMS)."""
        self._seen[stream] = time.monotonic()
        self._seen.move_to_end(stream)
        while len(self._seen) > MAX_STREAMS:
            self.forget(next(iter(self._seen)))

    def forget(self, stream: str) -> None:
        """Drop everything held for `stream` (its last frame, results, tracked frames, previews)."""
        for held in (
            self._seen,
            self.last_frame,
            self._results,
            self._tracks,
            self._pending,
            self._matched,
            self._bare_at,
        ):
            held.pop(stream, None)

    def _prune(self, shown: set[str] | None = None) -> None:
        """Forget streams quiet for STREAM_IDLE_S, and (given the fleet's shown streams) those not shown."""
        cutoff = time.monotonic() - STREAM_IDLE_S
        for sid in [sid for sid, t in self._seen.items() if t < cutoff or (shown is not None and sid not in shown)]:
            self.forget(sid)

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
    async def _listen(self, url: str) -> None:
        patterns = (keys.results_pattern(), keys.previews_pattern(), keys.tracks_pattern(), keys.events_pattern())
        while True:
            conn = connect_async(url)
            try:
                async with conn.pubsub() as ps:
                    await ps.psubscribe(*patterns)
                    silence = Silence()  # a hung or cut-off server is noticed, not waited on for ever
                    while True:
                        msg = await ps.get_message(timeout=LISTEN_WAIT_S)
                        if msg is None:
                            silence.check()
                            if silence.ping_due():
                                await ps.ping()
                                silence.sent()
                            continue
                        silence.heard()
                        if msg["type"] == "pmessage":
                            self.receive(msg["channel"], msg["data"])
            except (redis.RedisError, OSError) as exc:
                log.warning("live view: Redis subscription lost (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)
            finally:
                await conn.aclose()

    def _on_result(self, stream: str, data: bytes) -> None:
        result = decode_result(data).to_map()
        seq = record_seq(result["seq"])
        self._touch(stream)
        _keep(self._results.setdefault(stream, OrderedDict()), seq, (time.monotonic(), result))
        self._match(stream, seq)

    def _on_tracked(self, stream: str, data: bytes) -> None:
        # A frame that is not a tracking stage's is dropped and counted: the preview is drawn with its
        # result instead.
        frame = decode_tracked(data)
        tracked = {
            "model": frame.model,
            "latency_ms": round((frame.t_tracked - frame.t_capture) * 1000, 1),
            "boxes": [[round(v, 2) for v in box[:6]] for box in frame.boxes],
            "tracks": [box.track for box in frame.boxes],
            "zones": [box.zones for box in frame.boxes],
        }
        self._touch(stream)
        _keep(self._tracks.setdefault(stream, OrderedDict()), frame.seq, tracked)
        self._match(stream, frame.seq)

    def _on_preview(self, stream: str, data: bytes) -> None:
        p = decode_preview(data)
        preview = {"seq": p.seq, "jpeg": p.jpeg, "w": p.w, "h": p.h, "t": p.t}
        self._touch(stream)
        pending = self._pending.setdefault(stream, OrderedDict())
        pending[p.seq] = (time.monotonic(), preview)
        while len(pending) > PENDING_KEPT:
            pending.popitem(last=False)
        self._match(stream, p.seq)

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
        event = decode_event(data)  # RecordError (not JSON, NaN, too deep, too big): dropped and counted
        chunk = sse("event", event)
        for page in list(self.pages):
            if page.stream == stream:
                page.put(chunk)

    def recent_events(self, stream: str) -> bytes:
        """The stream's newest events, newest first, for a stream page that opens (plain Redis calls)."""
        try:
            return sse("events", recent_events(client_for(self.fleet, stream), stream=stream, limit=EVENTS_ON_OPEN))
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
            if now >= next_fleet and not self.pages:
                next_fleet = now + FLEET_EVERY_S
                self._prune()
            elif now >= next_fleet:
                next_fleet = now + FLEET_EVERY_S
                watched = {p.stream for p in self.pages if p.stream}
                try:
                    snapshot = await asyncio.to_thread(self.snapshot, watched)
                    shown = set(snapshot["streams"])
                    self._shown = (time.monotonic(), frozenset(shown))
                    self._prune(shown)
                except redis.RedisError as exc:
                    snapshot = {"t": time.time(), "error": f"Redis unreachable: {exc}"}
                    self._prune()
                snapshot["feed"] = self.status()
                self.fleet_chunk = sse("fleet", snapshot)
                for page in list(self.pages):
                    page.put(self.fleet_chunk)
            await asyncio.sleep(0.1)

    def snapshot(self, watched: set[str]) -> dict[str, Any]:
        """The fleet as the page shows it (runs in a thread: plain Redis calls)."""
        c = self.client
        for sid in watched:
            if keys.STREAM_ID_RE.match(sid):
                try:
                    client_for(self.fleet, sid).set(keys.preview_watch(sid), 1, ex=keys.PREVIEW_WATCH_TTL_S)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    if not isinstance(self.fleet, Shards) or not self.fleet.sharded:
                        raise
                    # its shard does not answer: the page shows it `unknown`; every other page goes on
                    log.info("preview of %s not asked for: %s", sid, describe(exc))
        report = status.collect(self.fleet)
        wanted = set(desired.streams(c))
        streams, models = {}, set()
        for sid, s in report["streams"].items():
            if sid not in wanted and s["state"] in ("stopped", "unknown"):
                continue  # stopped and no longer declared: its tile goes away
            if s["state"] == "unknown" and "shard" in s:  # its shard does not answer
                streams[sid] = {**s, "fps_in": 0.0, "p50": None, "p99": None, "gpus": {}}
                continue
            data = client_for(self.fleet, sid)
            try:
                info = text_map(data.hgetall(keys.stream(sid)))
                gpus = {k: int(v) for k, v in text_map(data.hgetall(keys.stream_gpus(sid))).items()}
                scene = self._scene(data, sid, info.get("analytics"))
            except (redis.ConnectionError, redis.TimeoutError):
                if "shard" not in s:
                    raise
                streams[sid] = {**s, "state": "unknown", "fps_in": 0.0, "p50": None, "p99": None, "gpus": {}}
                continue  # its shard stopped answering since status.collect read it
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
                **scene,
            }
            models.add(s["model"])
        self.tracking = frozenset(sid for sid, s in streams.items() if s.get("tracking"))
        names = {}
        for model in models:
            raw = c.get(keys.model_names(model)) if model else None
            if raw:
                with contextlib.suppress(SchemaError):
                    names[model] = decode_names(raw)
        workers = {
            name: {**{k: w[k] for k in WORKER_FIELDS if k in w}, "alive": w["alive"]}
            for name, w in report["workers"].items()
        }
        return {"t": time.time(), "streams": streams, "workers": workers, "names": names}

    def _scene(self, data: redis.Redis, sid: str, analytics: str | None) -> dict[str, Any]:
        """Tracking, zones and lines (normalized points) from the stream's analytics settings (JSON in
        its hash), with the live zone counts and event count; nothing for a stream without them."""
        if not analytics:
            return {}
        try:
            settings = AnalyticsSettings.model_validate_json(analytics)
        except ValueError:
            return {}
        counts = text_map(data.hgetall(keys.zone_counts(sid)))
        events = text_map(data.hgetall(keys.event_counts(sid)))
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
