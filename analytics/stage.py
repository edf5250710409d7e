"""The tracking stage: claims streams with leases, reads their results in order, tracks, emits events.

A stream is tracked by the one process holding `rtai:trackclaim:<stream>` (SET NX PX, renewed like
a producer daemon's claim); a killed tracker's streams are claimed by another within LEASE_S + POLL_S.
Results are read from the stream's history (XREAD), so none is lost while no tracker runs; where
tracking resumes (history cursor + next seq) is written in the same transaction as the tracks,
events and counters of the frames before it, so a takeover neither repeats nor loses a frame.
A takeover costs the tracks' state: tracks go on under new ids (never reused) and zone counts
start from zero.

With several Redis shards, `rtai tracker` runs one stage per shard (`stages`, each on its thread by
`common.stopping.run_loops`): each tracks the streams placed on its shard and writes all of the
above there, events to that shard's event log.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import redis

from common import desired, keys, scripts
from common.analytics_settings import AnalyticsSettings, TrackSettings
from common.config import host_name
from common.errors import RtaiError
from common.redis_client import connect, wait_until_up
from common.replies import text
from common.shards import Shards
from common.wire import Result, TrackedBox, TrackedFrame, decode_names, decode_result_boxes, encode_tracked, unpackb

from .bytetrack import ByteTrack
from .eventlog import append_event
from .reorder import Reorder
from .sink import StreamReply
from .tracker import IdBlocks, StreamTracker, stream_tracker
from .zones import Rules

log = logging.getLogger(__name__)

#: A dead tracker's streams are taken over after at most LEASE_S + POLL_S.
LEASE_S = 2.0
#: With shards, the longest a claim tick waits for the home shard's desired state (see `stages`).
DESIRED_READ_S = 0.5
POLL_S = 0.5
#: Results read per XREAD call (all streams together) and the longest block waiting for one.
READ_COUNT = 1000
READ_BLOCK_MS = 50
#: Replay depth of tracked frames.
TRACKS_MAXLEN = 10_000

#: Tracked frames of one stream, in order: published and appended to its history in one command.
#: KEYS: tracks channel, tracks history; ARGV: history cap, then the frames.
#: Keep an event's snapshot (extend its TTL) unless the stream's cap refuses it; 1 kept, 0 refused, -1 gone.
#: KEYS: snapshot, snapshot index, track stats; ARGV: seq, ttl, now, max count, max bytes, pending TTL.


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return int(ms), int(n or 0)


@dataclass
class StreamRun:
    stream: str
    settings: AnalyticsSettings
    version: bytes
    cursor: str
    reorder: Reorder
    tracker: ByteTrack | StreamTracker
    rules: Rules
    #: history id of the last result read
    read_from: str = "0-0"
    #: history id read just before each buffered seq: the resume point while it is unemitted
    before: dict[int, str] = field(default_factory=dict)
    names: dict[str, list[str]] = field(default_factory=dict)
    #: results unreadable or untrackable since the last write (counted as `bad`, skipped)
    bad: int = 0


def tracked_streams(
    client: redis.Redis, known: dict[bytes, AnalyticsSettings | None] | None = None
) -> dict[str, tuple[AnalyticsSettings, bytes]]:
    """Declared streams with tracking on -> (analytics settings, version of the desired state). One round
    trip for all streams; `known` caches the settings parsed from each version seen (kept to those in use)."""
    known = {} if known is None else known
    names = desired.streams(client)
    with client.pipeline(transaction=False) as pipe:
        for stream in names:
            pipe.get(keys.desired(stream))
        raws = pipe.execute()
    out, seen = {}, set()
    for stream, raw in zip(names, raws, strict=True):
        if raw is None:
            continue
        raw = raw if isinstance(raw, bytes) else raw.encode()
        seen.add(raw)
        if raw not in known:
            try:
                analytics = (unpackb(raw).get("settings") or {}).get("analytics")
                known[raw] = AnalyticsSettings(**analytics) if analytics else None
            except (RtaiError, ValueError, TypeError, AttributeError) as exc:  # not a map, or settings not one
                log.warning("stream %s: analytics settings unreadable: %s", stream, exc)
                known[raw] = None
        settings = known[raw]
        if settings is not None and settings.track is not None:
            out[stream] = (settings, raw)
    for raw in [r for r in known if r not in seen]:
        del known[raw]
    return out


class TrackingStage:
    """Tracks the streams of one Redis. With shards, one stage per shard (`stages`): each reads the desired
    state from the home shard and writes its streams' tracks, cursors and events on its own."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        home: redis.Redis | None = None,
        owns: Callable[[str], bool] | None = None,
        name: str | None = None,
        where: str = "",
        lease_s: float = LEASE_S,
    ) -> None:
        self.client = client
        self.home = client if home is None else home
        self.owns = owns
        self.name = name or default_name()
        self.where = where
        self.lease_ms = int(lease_s * 1000)
        self.runs: dict[str, StreamRun] = {}
        self.stopping = False
        self._renew = scripts.LEASE_RENEW.bind(self.client)
        self._release = scripts.LEASE_RELEASE.bind(self.client)
        self._next_claim = 0.0
        self._known: dict[bytes, AnalyticsSettings | None] = {}

    @classmethod
    def from_url(cls, redis_url: str, *, name: str | None = None, lease_s: float = LEASE_S) -> TrackingStage:
        """The stage of a one-Redis fleet (tests, benchmarks)."""
        return cls(connect(redis_url, check=False), name=name, lease_s=lease_s)

    def stop(self) -> None:
        self.stopping = True

    def run(self) -> None:
        wait_until_up(self.client, what=f"tracker {self.name}{self.where}", stop=lambda: self.stopping)
        log.info("tracker %s claiming streams%s", self.name, self.where)
        while not self.stopping:
            try:
                if time.monotonic() >= self._next_claim:
                    self.claim_tick()
                    self._next_claim = time.monotonic() + POLL_S
                self.step()
            except redis.RedisError as exc:
                # What was tracked but not written is redone from the stored resume point: drop every
                # stream (its lease lapses) and claim again once Redis answers.
                log.warning(
                    "tracker %s%s: Redis error, dropping %d stream(s): %s", self.name, self.where, len(self.runs), exc
                )
                self.runs.clear()
                time.sleep(POLL_S)
        for stream in list(self.runs):
            self._drop(stream)

    def claim_tick(self) -> None:
        try:
            wanted = tracked_streams(self.home, self._known)
        except redis.RedisError as exc:
            if self.home is self.client:
                raise
            # The home shard (desired state) is down, this one is not: go on with the streams held.
            log.warning("tracker %s%s: desired state unreadable, keeping %d stream(s): %s",
                        self.name, self.where, len(self.runs), exc)  # fmt: skip
            wanted = {s: (run.settings, run.version) for s, run in self.runs.items()}
        if self.owns is not None:
            wanted = {s: v for s, v in wanted.items() if self.owns(s)}
        held = list(self.runs)
        with self.client.pipeline(transaction=False) as pipe:
            for stream in held:
                self._renew(keys=[keys.track_claim(stream)], args=[self.name, self.lease_ms], client=pipe)
            renewed = pipe.execute()
        for stream, owned in zip(held, renewed, strict=True):
            if stream not in wanted or not owned or wanted[stream][1] != self.runs[stream].version:
                self._drop(stream)
        for stream in sorted(set(wanted) - set(self.runs)):
            if self.client.set(keys.track_claim(stream), self.name, nx=True, px=self.lease_ms):
                self._start(stream, *wanted[stream])

    def _start(self, stream: str, settings: AnalyticsSettings, version: bytes) -> None:
        cursor, next_seq = self.client.hmget(keys.track_position(stream), "cursor", "next_seq")
        track = settings.track or TrackSettings()  # tracked_streams() returns only streams with `track`
        self.client.delete(keys.zone_counts(stream))  # the new tracker starts with no track in any zone
        self.runs[stream] = StreamRun(
            stream=stream,
            settings=settings,
            version=version,
            cursor=text(cursor) if cursor else "0-0",
            read_from=text(cursor) if cursor else "0-0",
            reorder=Reorder(track.reorder_wait_s, int(next_seq) if next_seq else None),
            tracker=stream_tracker(track, IdBlocks(self.client, stream)),
            rules=Rules(settings),
        )
        log.info("tracker %s: tracking %s from %s", self.name, stream, self.runs[stream].cursor)

    def _drop(self, stream: str) -> None:
        self.runs.pop(stream, None)
        try:
            self._release(keys=[keys.track_claim(stream)], args=[self.name])
        except redis.RedisError as exc:
            log.warning("tracker %s: could not release %s: %s", self.name, stream, exc)

    def step(self) -> int:
        """Read new results of every owned stream, emit what is in order; returns frames emitted."""
        if not self.runs:
            time.sleep(READ_BLOCK_MS / 1000)
            return 0
        waiting = any(run.reorder.buffer for run in self.runs.values())
        block = 10 if waiting else READ_BLOCK_MS
        reply = self.client.xread(
            {keys.history(s): run.read_from for s, run in self.runs.items()}, count=READ_COUNT, block=block
        )
        for key, entries in cast(StreamReply, reply or []):
            stream = (key.decode() if isinstance(key, bytes) else key).removeprefix(keys.history(""))
            run = self.runs.get(stream)
            if run is not None:
                self._buffer(run, entries)
        emitted = 0
        pipe = self.client.pipeline(transaction=True)
        now = time.time()
        for run in self.runs.values():
            emitted += self._emit(run, pipe, now)
        if len(pipe):
            pipe.execute()
        return emitted

    def _buffer(self, run: StreamRun, entries: list) -> None:
        prev = run.read_from
        for entry_id, fields in entries:
            eid = entry_id.decode()
            try:
                result, boxes = decode_result_boxes(fields[b"r"])
            except (RtaiError, KeyError) as exc:
                log.warning("tracker: %s: unreadable result %s skipped: %s", run.stream, eid, exc)
                run.bad += 1
                prev = eid
                continue
            seq = result.seq
            if run.reorder.add(seq, (result, boxes)):
                run.before[seq] = prev
            prev = eid
        run.read_from = prev

    def _emit(self, run: StreamRun, pipe: Any, now: float) -> int:
        late_before = run.reorder.late
        ready = run.reorder.pop(now)
        if not ready.frames and not ready.skipped and run.reorder.late == late_before and not run.bad:
            return 0
        stream = run.stream
        n_events = 0
        frames: list[bytes] = []
        n_tracked = 0
        for seq, (result, boxes) in ready.frames:
            run.before.pop(seq, None)
            try:
                data, events = self._track(run, seq, result, boxes)
            except (ArithmeticError, ValueError, IndexError, RtaiError) as exc:
                # One bad frame (values decode let through) costs that frame, never the stream or the stage.
                log.warning("tracker: %s: frame %d skipped, it does not track: %r", stream, seq, exc)
                run.bad += 1
                continue
            n_tracked += 1
            frames.append(data)
            if events:  # a frame's tracks go out before its events
                self._send_frames(run, pipe, frames)
                frames = []
                n_events += self._send_events(run, pipe, seq, result, events)
        self._send_frames(run, pipe, frames)
        # Resume point: before the oldest frame still buffered, else after the last one read.
        cursor = min(run.before.values(), key=_id_tuple) if run.before else run.read_from
        position = {"cursor": cursor, "next_seq": run.reorder.next_seq}
        pipe.hset(keys.track_position(stream), mapping={k: v for k, v in position.items() if v is not None})
        stats = keys.track_stats(stream)
        if n_tracked:
            pipe.hincrby(stats, "tracked", n_tracked)
        if ready.skipped:
            pipe.hincrby(stats, "skipped", ready.skipped)
        if run.reorder.late != late_before:
            pipe.hincrby(stats, "late", run.reorder.late - late_before)
        if run.bad:
            pipe.hincrby(stats, "bad", run.bad)
            run.bad = 0
        if n_events:
            pipe.hincrby(stats, "events", n_events)
            if run.rules.counts:
                pipe.hset(keys.zone_counts(stream), mapping=run.rules.counts)
        return len(ready.frames)

    def _track(self, run: StreamRun, seq: int, result: Result, boxes: np.ndarray) -> tuple[bytes, list[dict]]:
        """Track one frame -> the tracked frame's message, and its events."""
        w, h = result.w or 1, result.h or 1
        events: list[dict] = []
        if result.gated and run.settings.track is not None:
            # Frames motion gating held back (nothing moved, no objects): a gap the producer chose, not
            # lost frames. The tracker ages its tracks by them as if it had seen them empty, so a track
            # that left is `lost`/`left` when it would have been without gating.
            empty = np.zeros((0, 6), dtype=np.float64)
            for _ in range(min(result.gated, run.settings.track.track_buffer + 1)):
                gap_rows, gap_alive = run.tracker.update(empty)
                events += run.rules.step(gap_rows, gap_alive, w, h, result.t_capture)[1]
        rows, alive = run.tracker.update(boxes)
        zones, frame_events = run.rules.step(rows, alive, w, h, result.t_capture)
        events += frame_events
        xyxy = np.round(rows[:, :4], 1).tolist()
        conf = np.round(rows[:, 5], 4).tolist()
        ints = rows[:, [6, 4]].astype(np.int64).tolist()  # cls, track id
        frame = TrackedFrame(
            stream=run.stream,
            seq=seq,
            t_capture=result.t_capture,
            t_done=result.t_done,
            t_tracked=time.time(),
            model=result.model,
            w=w,
            h=h,
            boxes=[
                TrackedBox(b[0], b[1], b[2], b[3], c, k, t, z)
                for b, c, (k, t), z in zip(xyxy, conf, ints, zones, strict=True)
            ],
        )
        return encode_tracked(frame), events

    def _send_frames(self, run: StreamRun, pipe: Any, frames: list[bytes]) -> None:
        if frames:
            stream = run.stream
            # EVAL, not a registered script: a pipeline with one asks SCRIPT EXISTS first, a round trip
            # per step; Redis caches the compiled body anyway.
            pipe.eval(
                scripts.EMIT_TRACKS.source,
                2,
                keys.tracks_channel(stream),
                keys.tracks_history(stream),
                TRACKS_MAXLEN,
                *frames,
            )

    def _send_events(self, run: StreamRun, pipe: Any, seq: int, result: Result, events: list[dict]) -> int:
        stream = run.stream
        names = self._names(run, result.model)
        snapshot = f"{stream}/{seq}" if self._keep_snapshot(run, seq, events) else None
        for i, ev in enumerate(events):
            cls = ev.pop("cls")
            ev.update(
                id=f"{stream}:{seq}:{i}",
                stream=stream,
                seq=seq,
                t=result.t_capture,
                **{"class": names[cls] if 0 <= cls < len(names) else cls},
                snapshot=snapshot,
            )
            append_event(pipe, ev)
        return len(events)

    def _keep_snapshot(self, run: StreamRun, seq: int, events: list[dict]) -> bool:
        """Extend the frame's snapshot to the stream's snapshot TTL if its settings and cap allow (one round
        trip; kept again harmlessly when the frame is redone after a takeover)."""
        settings = run.settings
        if not settings.snapshots:
            return False
        if settings.snapshot_events is not None and not any(e["type"] in settings.snapshot_events for e in events):
            return False
        kept = self.client.eval(
            scripts.KEEP_SNAPSHOT.source,
            3,
            keys.snapshot(run.stream, seq),
            keys.snapshot_index(run.stream),
            keys.track_stats(run.stream),
            seq,
            settings.snapshot_ttl_s,
            int(time.time()),
            settings.snapshot_max_count,
            settings.snapshot_max_bytes,
            keys.SNAPSHOT_PENDING_TTL_S,
        )
        return int(cast(int, kept)) == 1

    def _names(self, run: StreamRun, model: str | None) -> list[str]:
        if not model:
            return []
        if model not in run.names:
            raw = self.client.get(keys.model_names(model))
            try:
                run.names[model] = decode_names(raw) if raw else []
            except RtaiError:
                run.names[model] = []
        return run.names[model]


def _on_shard(shards: Shards, index: int, stream: str) -> bool:
    return shards.index_for(stream) == index


def default_name() -> str:
    """A tracker's name when none is given: host, pid and a random tail (a restarted pid differs)."""
    return f"{host_name()}:tracker:{os.getpid()}:{uuid.uuid4().hex[:4]}"


def stages(redis_url: str, *, name: str | None = None) -> list[TrackingStage]:
    """One stage per Redis shard (one for a one-Redis fleet), all under one tracker name."""
    shards = Shards.from_url(redis_url)
    if not shards.sharded:
        return [TrackingStage(shards.home, name=name)]
    name = name or default_name()
    # The other shards' stages read the desired state through a client that gives up within
    # DESIRED_READ_S, unretried: a hung home shard then costs a claim tick half a second, and their
    # streams' leases (LEASE_S) are renewed in time. With the usual 10 s and three retries, each tick
    # waited 40 s, every lease lapsed, and each stream restarted (new track ids) once it answered.
    home = connect(shards.urls[0], check=False, socket_timeout=DESIRED_READ_S, retries=0)
    return [
        TrackingStage(
            client,
            home=client if i == 0 else home,
            owns=functools.partial(_on_shard, shards, i),
            name=name,
            where=f" on {shards.label(i)}",
        )
        for i, client in shards.clients()
    ]
