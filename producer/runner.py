"""One stream's producer loop: sample the source at max_fps while the stream has room, encode,
batch (a batch leaves when full or after max_batch_wait_ms), enqueue. While the stream has no room,
each tick's frame replaces the frame of the batch that waits (fresh_batches; producer/enqueue.py)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

import redis

from common import keys
from common.clock import RedisClock
from common.config import ProducerSettings, resolve_source
from common.errors import SchemaError
from common.images import Picture, encode_frame
from common.redis_client import describe, wait_until_up, write_rejected
from common.shards import Shards
from common.states import StreamState
from common.wire import Frame, decode_result_boxes

from .enqueue import BatchSink
from .flow import Flow
from .motion import MotionGate
from .preview import WATCHED_WIDTH, PreviewWriter
from .source import CapturedFrame, VideoSource

log = logging.getLogger(__name__)

#: How often the producer records its input frame rate.
RATE_EVERY_S = 2.0


#: How often the producer checks that Redis still counts every frame it counted (producer/enqueue.py
#: reconcile: a failover's lost tail); also at once whenever Redis comes back.
RECONCILE_EVERY_S = 5.0

#: Frames motion gating held back are added to the ledger at most this often (and with every batch).
STATIC_COUNT_EVERY_S = 1.0

#: Frames that arrive this long before the next sampling tick are converted, so the tick finds a
#: frame at most this old ready (producer/source.py converts only what will be sampled).
WANT_SLACK_S = 0.02


@dataclass
class ProducerStats:
    frames: int = 0
    batches: int = 0
    dropped_batches: int = 0
    redis_errors: int = 0
    #: Frames skipped at the source because the stream had no room (credit-based flow).
    skipped: int = 0
    #: Sampled frames motion gating held back (ledger: skipped_static).
    static: int = 0


class StreamProducer:
    def __init__(self, settings: ProducerSettings, *, client: redis.Redis | None = None) -> None:
        self.settings = settings
        # The shard that holds the stream's keys (the only one, unless the URL names several).
        self.client = client or Shards.from_url(settings.redis_url).for_stream(settings.stream)
        self.clock = RedisClock(self.client, what=f"producer {settings.stream}")
        self.sink = BatchSink(self.client, settings, clock=self.clock)
        self.preview = PreviewWriter(self.client, settings.stream)
        self.stats = ProducerStats()
        self._owed = 0  # frames dropped while Redis was unreachable, not yet in the ledger
        self._owed_full = 0  # frames Redis refused (out of memory, read-only), not yet in the ledger
        self._owed_skipped = 0  # frames skipped for lack of room, not yet in the ledger
        self._owed_static = 0  # frames motion gating held back, not yet in the ledger
        self._static_at = time.monotonic()
        self._reconciled_at = time.monotonic()
        motion = settings.analytics.motion if settings.analytics else None
        self.gate = MotionGate(motion) if motion is not None else None
        self._rate_at, self._rate_frames = time.monotonic(), 0
        self.stop_event = threading.Event()
        self.source = VideoSource(
            resolve_source(settings.source),
            loop=settings.loop,
            open_timeout_s=settings.open_timeout_s,
            stall_timeout_s=settings.stall_timeout_s,
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=settings.reconnect_max_s,
            max_reconnects=settings.max_reconnects,
            on_state=self._on_state,
            decode=settings.decode,
            max_side=settings.imgsz,
            yuv=settings.encoding == "jpeg",
        )

    def _on_state(self, state: StreamState, reason: str) -> None:
        try:
            self.sink.set_state(state, reason)
            if state == StreamState.RUNNING:  # which decoder the open that now runs uses (cpu | nvdec)
                self.client.hset(keys.stream(self.settings.stream), "decode", self.source.decoder)
        except redis.RedisError as exc:
            log.warning("stream %s: could not record state %s: %s", self.settings.stream, state.value, exc)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> ProducerStats:
        s = self.settings
        while True:  # Redis that goes away between the ping and the registration is waited for again
            if not wait_until_up(self.client, what=f"producer {s.stream}", stop=self.stop_event.is_set):
                return self.stats  # stopped before Redis answered
            self.clock.measure()  # a skewed host is reported at start
            try:
                self.sink.register()
                self.sink.set_state(StreamState.CONNECTING)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("stream %s: could not register (%s); waiting for Redis", s.stream, describe(exc))
        self.source.start()
        interval = 1.0 / s.max_fps
        batch_wait = s.max_batch_wait_ms / 1000.0
        flow = Flow(self.client, s, self.clock, self.sink.queue.key)
        next_t = time.monotonic()
        last_index = -1
        pending: list[Frame] = []
        #: The captured pictures of `pending` while a stream page is open (a larger preview), else None.
        pictures: list[Picture | None] = []
        first_at = 0.0
        try:
            while not self.stop_event.is_set():
                if s.max_frames is not None and self.stats.frames >= s.max_frames:
                    break
                now = time.monotonic()
                if pending and now - first_at >= batch_wait:
                    self._flush(pending, pictures)  # a partly filled batch never waits past its deadline
                    pending, pictures = [], []
                    continue
                wait = next_t - now
                if pending:
                    wait = min(wait, first_at + batch_wait - now)
                if wait > 0:
                    self.stop_event.wait(wait)
                    continue
                early: CapturedFrame | None = None
                if not pending and s.fresh_batches and self.sink.refreshable():
                    # This tick's frame first, then the room: a worker that takes the waiting batch
                    # while the frame comes leaves room for a new one (no refresh tried in vain).
                    early = self.source.newest(last_index, timeout=interval)
                    if early is None:
                        if self.source.finished:
                            break
                        continue
                    if not self._has_room(flow):
                        # No room: the batch that waits takes this tick's frame in place of its own.
                        next_t = max(next_t + interval, now - interval)
                        last_index = early.index
                        self.source.want_from(next_t - min(interval / 2, WANT_SLACK_S))
                        if self._gated(early):
                            continue
                        self._refresh(self._encode(early), self._picture(early))
                        continue
                # A sampling tick. A new batch starts only when the stream has room for it.
                waited = 0.0 if pending or early is not None else self._wait_for_room(flow)
                now = time.monotonic()
                next_t = now + interval if waited > interval else max(next_t + interval, now - interval)
                captured = early or self.source.newest(last_index, timeout=max(1.0, 2 * interval))
                if captured is None:
                    if self.source.finished:
                        break
                    continue
                if last_index >= 0 and waited > interval:
                    # Ticks that passed without room, each with a new frame at the source: skipped.
                    self._skip(min(int(waited / interval), captured.index - last_index - 1))
                last_index = captured.index
                self.source.want_from(next_t - min(interval / 2, WANT_SLACK_S))
                if self._gated(captured):
                    continue
                if not pending:
                    first_at = time.monotonic()
                pending.append(self._encode(captured))
                pictures.append(self._picture(captured))
                self.stats.frames += 1
                if len(pending) >= s.batch_size or time.monotonic() - first_at >= batch_wait:
                    self._flush(pending, pictures)
                    pending, pictures = [], []
            if pending:
                self._flush(pending, pictures)
            self._pay_debts()
        finally:
            self.source.stop()
            final = self.source.state if self.source.state == StreamState.ERROR else StreamState.STOPPED
            self._on_state(final, self.source.reason if final == StreamState.ERROR else "producer stopped")
        return self.stats

    def _encode(self, captured: CapturedFrame) -> Frame:
        s = self.settings
        frame = encode_frame(
            captured.image,
            seq=0,
            t_capture=self.clock.to_redis(captured.t_capture),
            imgsz=s.imgsz,
            enc=s.encoding,
            quality=s.jpeg_quality,
            camera_size=captured.camera_size,
        )
        held = self.gate.take_held() if self.gate is not None else 0
        return replace(frame, gated=held) if held else frame

    def _gated(self, captured: CapturedFrame) -> bool:
        """Motion gating (producer/motion.py) holds this sampled frame back: counted skipped_static."""
        if self.gate is None or self.gate.decide(captured.image, time.monotonic(), self._objects_present):
            return False
        self.stats.frames += 1
        self.stats.static += 1
        self._owed_static += 1
        if time.monotonic() - self._static_at >= STATIC_COUNT_EVERY_S:
            try:
                self._count_static()
            except redis.RedisError as exc:
                log.debug("stream %s: static frames not counted yet: %s", self.settings.stream, describe(exc))
        return True

    def _count_static(self) -> None:
        self._static_at = time.monotonic()
        if self._owed_static:
            self.sink.count_static(self._owed_static)
            self._owed_static = 0

    def _objects_present(self) -> bool:
        """The stream's newest result has objects (unknown counts as yes: the frame is then sent)."""
        try:
            newest = self.client.xrevrange(keys.history(self.settings.stream), count=1)
        except redis.RedisError:
            return True
        if not newest:
            return False
        fields = newest[0][1] or {}
        try:
            _, boxes = decode_result_boxes(fields.get(b"r", fields.get("r")))
        except SchemaError:
            return True
        return len(boxes) > 0

    def _picture(self, captured: CapturedFrame) -> Picture | None:
        """The captured picture, kept for a larger preview only while a stream page is open. A decoder
        that converts at the size sent (PyAV) is asked for pictures wide enough for it meanwhile."""
        watched = self.preview.watched
        self.source.max_side = max(self.settings.imgsz, WATCHED_WIDTH) if watched else self.settings.imgsz
        return captured.image if watched else None

    def _has_room(self, flow: Flow) -> bool:
        """Room for a new batch; a Redis error says yes (the push then counts the frame as usual)."""
        try:
            return flow.has_room()
        except redis.RedisError as exc:
            log.debug("stream %s: queue depth unknown: %s", self.settings.stream, describe(exc))
            return True

    def _refresh(self, frame: Frame, picture: Picture | None = None) -> None:
        """The waiting batch stays fresh: `frame` replaces the frame of the batch that still waits
        (that one is counted produced and dropped_backpressure). When a worker took the batch
        meanwhile, the frame starts a new batch instead."""
        self.stats.frames += 1
        try:
            self._settle_owed()
            seq = self.sink.refresh(frame)
        except redis.RedisError as exc:
            self.stats.redis_errors += 1
            self._owe(1, exc)
            return
        if seq is None:
            self._flush([frame], [picture])
            return
        self.stats.skipped += 1
        self.preview.offer([frame], seq, [picture])

    def _wait_for_room(self, flow: Flow) -> float:
        """Wait until the stream has room for a batch (credit-based flow); seconds waited. A Redis
        error ends the wait: the batch is then dropped and counted by _flush as usual."""
        try:
            return flow.wait_for_room(self.stop_event.is_set)
        except redis.RedisError as exc:
            log.debug("stream %s: queue depth unknown: %s", self.settings.stream, describe(exc))
            return 0.0

    def _skip(self, n: int) -> None:
        """Frames skipped at the source while the stream had no room: produced and dropped_backpressure."""
        if n <= 0:
            return
        self.stats.skipped += n
        self._owed_skipped += n
        try:
            self.sink.count_skipped(self._owed_skipped)
            self._owed_skipped = 0
        except redis.RedisError as exc:
            log.debug("stream %s: %d skipped frames not counted yet: %s", self.settings.stream, n, describe(exc))

    def _report_rate(self) -> None:
        """Record the sampled frame rate (fps_in) in the stream's hash every couple of seconds."""
        now = time.monotonic()
        if now - self._rate_at < RATE_EVERY_S:
            return
        fps = (self.stats.frames - self._rate_frames) / (now - self._rate_at)
        self._rate_at, self._rate_frames = now, self.stats.frames
        self.client.hset(
            keys.stream(self.settings.stream),
            mapping={"fps_in": round(fps, 2), "clock_offset_s": round(self.clock.offset, 3)},
        )

    def _flush(self, frames: list[Frame], pictures: list[Picture | None] | None = None) -> None:
        try:
            self._settle_owed()
            if self.sink.push(frames):
                self.stats.batches += 1
                self.preview.offer(frames, self.sink.last_seq0, pictures)
            else:
                self.stats.dropped_batches += 1
        except redis.RedisError as exc:
            self.stats.redis_errors += 1
            self._owe(len(frames), exc)
            return
        try:
            self._report_rate()
            if time.monotonic() - self._reconciled_at >= RECONCILE_EVERY_S:
                self._reconciled_at = time.monotonic()
                self.sink.reconcile()
        except redis.RedisError as exc:
            log.debug("stream %s: could not record the frame rate: %s", self.settings.stream, describe(exc))

    def _settle_owed(self) -> None:
        """Redis takes writes again: account for the frames dropped while it did not."""
        self._count_static()
        if self._owed_skipped:
            self.sink.count_skipped(self._owed_skipped)
            self._owed_skipped = 0
        if self._owed or self._owed_full:
            # Redis is back, perhaps a new master without the old one's last writes: count them first.
            self.sink.reconcile()
        if self._owed:
            # Redis is back: register the stream again (it may have restarted empty).
            self.sink.register()
            self.sink.set_state(self.source.state, self.source.reason)
            self.sink.count_unreachable(self._owed)
            log.warning(
                "stream %s: Redis is back; %d frames were dropped while it was unreachable",
                self.settings.stream,
                self._owed,
            )
            self._owed = 0
        if self._owed_full:
            self.sink.count_redis_full(self._owed_full)
            log.warning(
                "stream %s: Redis takes writes again; %d frames were dropped while it refused them",
                self.settings.stream,
                self._owed_full,
            )
            self._owed_full = 0

    def _owe(self, n: int, exc: redis.RedisError) -> None:
        """Frames Redis did not take: counted (produced and dropped) once it takes writes again.
        The log names the problem in words: a pipeline's error would quote the batch's bytes."""
        first = not (self._owed or self._owed_full)
        if write_rejected(exc):
            self._owed_full += n
            reason = "counted dropped_redis_full once it takes writes again"
        else:
            self._owed += n
            reason = "counted dropped_unreachable once Redis is back"
        log_at = logging.ERROR if first else logging.DEBUG
        log.log(log_at, "stream %s: %s; %d frames dropped (%s)", self.settings.stream, describe(exc), n, reason)

    def _pay_debts(self) -> None:
        """On the way out: try once more to account for frames Redis did not take."""
        try:
            self._settle_owed()
        except redis.RedisError as exc:
            log.error(
                "stream %s: %d frames dropped while Redis was unreachable or full could not be counted: %s",
                self.settings.stream,
                self._owed + self._owed_full + self._owed_static,
                describe(exc),
            )
