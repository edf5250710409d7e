"""A producer daemon: runs every desired stream it can claim; takes over streams of dead daemons.

Each stream is claimed with `SET rtai:claim:<stream> <daemon> NX PX lease`; the owner renews the
lease every lease/4 seconds. A daemon that dies stops renewing, and within one lease another
daemon claims the stream and starts producing it.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis

from common import desired, keys
from common.config import host_name
from common.errors import ConfigError, RtaiError
from common.redis_client import connect, wait_until_up
from common.sources import redact

from .runner import StreamProducer

log = logging.getLogger(__name__)

#: A dead daemon's streams are taken over after at most this long.
CLAIM_LEASE_S = 3.0
POLL_S = 0.5

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
        self.client = connect(redis_url, check=False)
        self.name = name or f"{host_name()}:producer:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        self.max_streams = max_streams
        self.lease_ms = int(lease_s * 1000)
        self.running: dict[str, Running] = {}
        self.stop_event = threading.Event()
        self._renew = self.client.register_script(RENEW_LUA)
        self._release = self.client.register_script(RELEASE_LUA)
        self._file: tuple[Path, str] | None = None
        self._file_error: str | None = None

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
        while not self.stop_event.is_set():
            try:
                self.tick()
            except redis.RedisError as exc:
                log.warning("producer daemon %s: Redis error: %s", self.name, exc)
            self.stop_event.wait(min(POLL_S, self.lease_ms / 4000))
        for stream in list(self.running):
            self._stop_stream(stream)

    def tick(self) -> None:
        if self._file is not None:
            self._redeclare_if_forgotten(*self._file)
        wanted = set(desired.streams(self.client))
        for stream in list(self.running):
            run = self.running[stream]
            owned = self._renew(keys=[keys.claim(stream)], args=[self.name, self.lease_ms])
            current = self.client.get(keys.desired(stream))
            if stream not in wanted or not owned or current != run.version or not run.thread.is_alive():
                self._stop_stream(stream)
        for stream in sorted(wanted - set(self.running)):
            if self.max_streams is not None and len(self.running) >= self.max_streams:
                break
            if self.client.set(keys.claim(stream), self.name, nx=True, px=self.lease_ms):
                self._start_stream(stream)

    def _redeclare_if_forgotten(self, path: Path, marker: str) -> None:
        if not desired.file_forgotten(self.client, marker):
            return
        try:
            streams, marker = desired.declare_file(self.client, path, self.redis_url)
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

    def _start_stream(self, stream: str) -> None:
        version = self.client.get(keys.desired(stream))
        try:
            settings = desired.settings_for(self.client, stream, self.redis_url)
        except RtaiError as exc:
            log.error("producer daemon %s: cannot run %s: %s", self.name, stream, exc)
            self.client.hset(keys.stream(stream), mapping={"state": "error", "reason": str(exc)})
            return
        if settings is None or version is None:
            self._release(keys=[keys.claim(stream)], args=[self.name])
            return
        producer = StreamProducer(settings, client=self.client)
        thread = threading.Thread(target=producer.run, name=f"rtai-producer:{stream}", daemon=True)
        thread.start()
        self.running[stream] = Running(producer, thread, version)
        log.info("producer daemon %s: running %s from %s", self.name, stream, redact(settings.source))

    def _stop_stream(self, stream: str) -> None:
        run = self.running.pop(stream)
        run.producer.stop()
        run.thread.join(timeout=10)
        try:
            self._release(keys=[keys.claim(stream)], args=[self.name])
        except redis.RedisError as exc:
            log.warning("producer daemon %s: could not release %s: %s", self.name, stream, exc)
        log.info("producer daemon %s: stopped %s", self.name, stream)
