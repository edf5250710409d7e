"""This host's clock against Redis' clock: every process stamps and compares times in Redis time.

A producer stamps capture and enqueue times and a worker checks staleness and latency; on two
hosts whose clocks disagree, a worker 12 s ahead would call every frame stale. So each process
measures its offset from Redis' `TIME` (offset = Redis time - the local midpoint of the round
trip), re-measures it every `DEFAULT_CLOCK_CHECK_S`, and uses local time + offset everywhere. A host
more than `SKEW_WARN_S` off is logged once and shown by `rtai status`.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from .config import DEFAULT_CLOCK_CHECK_S, clock_skew_test_s

log = logging.getLogger(__name__)

#: A host further off than this from Redis' clock is reported: NTP keeps hosts within milliseconds.
SKEW_WARN_S = 1.0
#: A measurement whose round trip took longer is discarded (the offset is off by up to half of it):
#: a TIME sent to a Redis that hung is answered when it resumes, and taking that answer stamped a
#: stream's frames seconds ahead (negative latencies, nothing stale) until the next measurement.
MAX_RTT_S = 0.5
#: After a discarded measurement, the next one is taken this soon.
RETRY_S = 1.0


class RedisClock:
    def __init__(self, client: redis.Redis, *, what: str, every_s: float = DEFAULT_CLOCK_CHECK_S) -> None:
        self.client = client
        self.what = what
        self.every_s = every_s
        self.offset = 0.0
        self.rtt = 0.0
        self._measured_at: float | None = None
        self._warned = False
        self._lock = threading.Lock()
        self._test_skew = clock_skew_test_s()

    def local(self) -> float:
        """This host's wall clock (time.time(), skewed on purpose by RTAI_CLOCK_SKEW_TEST_S in tests)."""
        return time.time() + self._test_skew

    def measure(self) -> float:
        """Measure the offset now (keeps the last one when Redis does not answer)."""
        try:
            t0 = self.local()
            sec, usec = self.client.time()
            t1 = self.local()
        except redis.RedisError as exc:
            log.debug("%s: clock offset not measured: %s", self.what, exc)
            with self._lock:
                self._measured_at = time.monotonic()  # try again after every_s, not on every call
            return self.offset
        if t1 - t0 > MAX_RTT_S:
            log.debug("%s: clock offset not measured: TIME took %.1f s", self.what, t1 - t0)
            with self._lock:  # the last offset stands; measured again in RETRY_S
                self._measured_at = time.monotonic() - self.every_s + RETRY_S
            return self.offset
        with self._lock:
            self.offset = sec + usec / 1e6 - (t0 + t1) / 2
            self.rtt = t1 - t0
            self._measured_at = time.monotonic()
        if abs(self.offset) > SKEW_WARN_S and not self._warned:
            self._warned = True
            log.warning(
                "%s: this host's clock is %.1f s %s Redis' clock; times are corrected by Redis' TIME, "
                "but keep hosts NTP-synced",
                self.what,
                abs(self.offset),
                "behind" if self.offset > 0 else "ahead of",
            )
        return self.offset

    def now(self) -> float:
        """Now, in Redis time (seconds since the epoch)."""
        at = self._measured_at
        if at is None or time.monotonic() - at >= self.every_s:
            self.measure()
        return self.local() + self.offset

    def to_redis(self, t_local: float) -> float:
        """A time.time() stamp taken on this host, in Redis time."""
        self.now()  # re-measure when due
        return t_local + self._test_skew + self.offset

    @property
    def skewed(self) -> bool:
        return abs(self.offset) > SKEW_WARN_S
