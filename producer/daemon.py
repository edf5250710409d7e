"""A producer daemon: runs every desired stream it can claim; takes over streams of dead daemons.

Each stream is claimed with `SET rtai:claim:<stream> <daemon> NX PX lease`; the owner renews the
lease every lease/4 seconds. A daemon that dies stops renewing, and within one lease another
daemon claims the stream and starts producing it.

The renewals run on their own thread, all claims in one script call, so a slow tick (a loaded
host, many streams starting) never lets a lease lapse. A stream stops on a thread of its own
(joining a producer whose source hangs in an open can take seconds), and keeps its claim renewed
until it has stopped, so no other daemon starts it while the old producer still runs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from common import desired, keys, scripts
from common.config import host_name
from common.errors import ConfigError, RtaiError
from common.redis_client import wait_until_up
from common.shards import Shards
from common.sources import redact

from .runner import StreamProducer

log = logging.getLogger(__name__)

#: A dead daemon's streams are taken over after at most this long.
CLAIM_LEASE_S = 3.0
POLL_S = 0.5

#: Renew every claim in KEYS held by ARGV[1]; per key, in order: 1 renewed, 2 had lapsed with no
#: other owner and is taken again, 0 another daemon holds it.
RENEWED, RETAKEN = 1, 2
#: On a loaded host a lease is renewed with this many times the slowest recent renewal interval ...
LEASE_MARGIN = 3.0
#: ... but at most this many base leases (a dead daemon's streams are then taken over in 15 s).
MAX_LEASE_FACTOR = 5
#: Per renewal, the remembered slowest interval shrinks by this factor (back to the base lease).
SLOWEST_DECAY = 0.9
#: How long a stopping stream's producer gets to end before its claim is released anyway.
STOP_JOIN_S = 10.0


@dataclass
class Running:
    producer: StreamProducer
    thread: threading.Thread
    #: The desired state's version as Redis returned it (compared, never parsed).
    version: bytes | str


class ProducerDaemon:
    def __init__(
        self, redis_url: str, *, name: str | None = None, max_streams: int | None = None, lease_s: float = CLAIM_LEASE_S
    ) -> None:
        self.redis_url = redis_url
        #: The fleet's shards: the control plane on the home shard, each stream's keys on its own.
        self.shards = Shards.from_url(redis_url)
        self.client = self.shards.home
        self.name = name or f"{host_name()}:producer:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        self.max_streams = max_streams
        self.lease_ms = int(lease_s * 1000)
        #: Guards `running` and `stopping`: the tick, the renewer and the stoppers share them.
        self._lock = threading.Lock()
        self.running: dict[str, Running] = {}
        #: Streams whose producer is being stopped (their claim is renewed until it has ended).
        self.stopping: dict[str, threading.Thread] = {}
        self.stop_event = threading.Event()
        #: Set once every stream has stopped: the renewer keeps stopping streams' claims until then.
        self._done = threading.Event()
        #: Streams started and stopped; claims found lapsed (and taken again), or held by another daemon.
        self.starts = self.stops = self.lapsed = self.lost_leases = 0
        self._renew_all = scripts.LEASE_RENEW_ALL.bind(self.client)
        self._release = scripts.LEASE_RELEASE.bind(self.client)
        self._renewed_at = time.monotonic()
        self._slowest_s = 0.0
        self._file: tuple[Path, str] | None = None
        self._file_error: str | None = None
        #: When Redis last failed this daemon (a command of the tick or the renewer).
        self._failed_at = float("-inf")

    def watch_file(self, path: Path, marker: str) -> None:
        """Keep the camera list at `path` (declared with marker key `marker`) declared.

        Each tick checks the marker: gone means Redis lost the declaration (restarted empty), so
        the file is declared again. A stream removed by `rtai stream rm` or the API while the
        marker stays is left removed.
        """
        self._file = (path, marker)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        wait_until_up(self.client, what=f"producer daemon {self.name}", stop=self.stop_event.is_set)
        log.info("producer daemon %s claiming streams", self.name)
        desired.daemon_beat(self.client, self.name)
        renewer = threading.Thread(target=self._renew_loop, name="rtai-producer-daemon:renew", daemon=True)
        renewer.start()
        while not self.stop_event.is_set():
            try:
                self.tick()
            except redis.RedisError as exc:
                self._failed_at = time.monotonic()
                log.warning("producer daemon %s: Redis error: %s", self.name, exc)
            self.stop_event.wait(min(POLL_S, self.lease_ms / 4000))
        with self._lock:
            for stream in list(self.running):
                self._stop_stream(stream)
            stoppers = list(self.stopping.values())
        for stopper in stoppers:
            stopper.join()
        self._done.set()
        renewer.join()

    def tick(self) -> None:
        t0 = time.monotonic()
        if self._file is not None:
            self._redeclare_if_forgotten(*self._file)
        wanted = set(desired.streams(self.client))
        with self._lock:
            running = dict(self.running)
        if running:
            versions = self.client.mget([keys.desired(s) for s in running])
            for (stream, run), current in zip(running.items(), versions, strict=True):
                if stream not in wanted or current != run.version or not run.thread.is_alive():
                    with self._lock:
                        if self.running.get(stream) is run:
                            self._stop_stream(stream)
        with self._lock:
            busy = set(self.running) | set(self.stopping)
        if time.monotonic() - t0 > self.lease_ms / 4000:  # Redis hung meanwhile: as a failure
            self._failed_at = time.monotonic()
        if time.monotonic() - self._failed_at < self.lease_ms / 1000:
            # Redis failed us a moment ago (a Sentinel failover outlasts a lease: ~3-4 s with
            # Compose's down-after of 2 s), so every daemon's claims may have lapsed meanwhile. A
            # lapsed claim is left a lease to the daemon that holds it, whose renewer takes it again
            # within a second and carries on; claiming it here restarted the stream on this daemon
            # and ran it twice until the holder's next renewal.
            return
        for stream in sorted(wanted - busy):
            if self.max_streams is not None and len(self.running) + len(self.stopping) >= self.max_streams:
                break
            if self.client.set(keys.claim(stream), self.name, nx=True, px=self.lease_ms):
                self._start_stream(stream)

    # -- claims ---------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        every = self.lease_ms / 4000
        while not self._done.wait(every):
            try:
                desired.daemon_beat(self.client, self.name)  # "a daemon is running", for unclaimed streams
                self.renew()
            except redis.RedisError as exc:
                self._failed_at = time.monotonic()
                log.warning("producer daemon %s: could not renew its claims: %s", self.name, exc)
        try:
            desired.daemon_gone(self.client, self.name)
        except redis.RedisError:
            pass  # its heartbeat lapses by itself

    def renew_px(self, interval_s: float) -> int:
        """The lease to renew with: the base lease, stretched on a host so loaded that renewals come
        late (LEASE_MARGIN times the slowest recent interval, at most MAX_LEASE_FACTOR leases), so
        one stall does not lapse every claim at once. The stretch decays as renewals come on time."""
        self._slowest_s = max(interval_s, self._slowest_s * SLOWEST_DECAY)
        return int(min(self.lease_ms * MAX_LEASE_FACTOR, max(self.lease_ms, LEASE_MARGIN * self._slowest_s * 1000)))

    def renew(self) -> None:
        """Renew every claim this daemon holds in one call. A claim that lapsed with nobody taking it
        is taken again (the producer carries on); a running stream another daemon took meanwhile is
        stopped. Both are said at WARNING."""
        with self._lock:
            held = list(self.running) + list(self.stopping)
        if not held:
            self._renewed_at = time.monotonic()
            return
        px = self.renew_px(time.monotonic() - self._renewed_at)
        got = self._renew_all(keys=[keys.claim(s) for s in held], args=[self.name, px])
        done = time.monotonic()
        # Since the last renewal returned: an upper bound on the gap Redis saw between the two.
        late_s, self._renewed_at = done - self._renewed_at, done
        self._slowest_s = max(self._slowest_s, late_s)
        retaken = [stream for stream, got_it in zip(held, got, strict=True) if got_it == RETAKEN]
        if retaken:
            with self._lock:  # a stream stopped and released meanwhile is not kept claimed
                gone = [st for st in retaken if st not in self.running and st not in self.stopping]
            for stream in gone:
                self._release(keys=[keys.claim(stream)], args=[self.name])
            retaken = [st for st in retaken if st not in gone]
        if retaken:
            # Nobody took them meanwhile: the producers carry on, no restart.
            self.lapsed += len(retaken)
            log.warning(
                "producer daemon %s: the claims of %d stream(s) had lapsed (last renewal %.1f s ago, lease %.1f s; "
                "host overloaded?) and are taken again: %s",
                self.name,
                len(retaken),
                late_s,
                self.lease_ms / 1000,
                ", ".join(retaken),
            )
        for stream, owned in zip(held, got, strict=True):
            if owned:
                continue
            with self._lock:
                if stream not in self.running:
                    continue  # stopping anyway
                self.lost_leases += 1
                log.warning(
                    "producer daemon %s: lost its claim of %s to another daemon (last renewal %.1f s ago, "
                    "lease %.1f s); stopping it",
                    self.name,
                    stream,
                    late_s,
                    self.lease_ms / 1000,
                )
                self._stop_stream(stream)

    def _redeclare_if_forgotten(self, path: Path, marker: str) -> None:
        if not desired.file_forgotten(self.client, marker):
            return
        try:
            streams, marker = desired.declare_file(
                self.client, path, self.redis_url, data_for=self.shards.for_stream if self.shards.sharded else None
            )
        except ConfigError as exc:
            if str(exc) != self._file_error:  # once per distinct problem, not every tick
                log.error("producer daemon %s: cannot declare %s again: %s", self.name, path, exc)
                self._file_error = str(exc)
            return
        self._file, self._file_error = (path, marker), None
        log.warning(
            "producer daemon %s: Redis no longer holds the streams of %s (restarted without persistence?); "
            "declared %d stream(s) again: %s",
            self.name,
            path,
            len(streams),
            ", ".join(streams) or "-",
        )

    # -- streams --------------------------------------------------------------------------
    def _start_stream(self, stream: str) -> None:
        version = self.client.get(keys.desired(stream))
        try:
            settings = desired.settings_for(self.client, stream, self.redis_url)
        except RtaiError as exc:
            log.error("producer daemon %s: cannot run %s: %s", self.name, stream, exc)
            self.shards.for_stream(stream).hset(keys.stream(stream), mapping={"state": "error", "reason": str(exc)})
            return
        if settings is None or version is None:
            self._release(keys=[keys.claim(stream)], args=[self.name])
            return
        producer = StreamProducer(settings, client=self.shards.for_stream(stream))
        thread = threading.Thread(target=producer.run, name=f"rtai-producer:{stream}", daemon=True)
        thread.start()
        with self._lock:
            self.running[stream] = Running(producer, thread, version)
            self.starts += 1
        log.info("producer daemon %s: running %s from %s", self.name, stream, redact(settings.source))

    def _stop_stream(self, stream: str) -> None:
        """Ask the stream's producer to stop and let a thread of its own wait for it (hold the lock)."""
        run = self.running.pop(stream)
        run.producer.stop()
        stopper = threading.Thread(
            target=self._finish_stop, args=(stream, run), name=f"rtai-producer-stop:{stream}", daemon=True
        )
        self.stopping[stream] = stopper
        self.stops += 1
        stopper.start()

    def _finish_stop(self, stream: str, run: Running) -> None:
        run.thread.join(timeout=STOP_JOIN_S)
        if run.thread.is_alive():
            log.warning("producer daemon %s: %s did not stop within %.0f s", self.name, stream, STOP_JOIN_S)
        try:
            self._release(keys=[keys.claim(stream)], args=[self.name])
        except redis.RedisError as exc:
            log.warning("producer daemon %s: could not release %s: %s", self.name, stream, exc)
        with self._lock:
            self.stopping.pop(stream, None)
        log.info("producer daemon %s: stopped %s", self.name, stream)
