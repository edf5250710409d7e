"""One way to open the fleet's Redis: from a URL (redis://, rediss:// with TLS, AUTH in the URL)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .backoff import Backoff
from .config import redis_start_timeout_s
from .errors import RedisUnavailableError
from .redis_diagnosis import diagnose, permanent
from .sources import redact, redact_text

log = logging.getLogger(__name__)

#: Reconnect attempts back off up to this many seconds between tries.
MAX_BACKOFF_S = 5.0
#: Socket timeouts long enough for a busy Redis, short enough to notice a dead one.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3.0


def connect(url: str, *, check: bool = True) -> redis.Redis:
    """A client for `url`; with check, fail now with a clear error if Redis does not answer."""
    try:
        client = redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), 3),
        )
    except ValueError as exc:
        raise RedisUnavailableError(f"bad Redis URL {redact(url)!r}: {redact_text(str(exc))}") from exc
    if check:
        check_at_start(url)
    return client


def check_at_start(url: str, *, timeout_s: float | None = None) -> None:
    """For a process that has not reached Redis yet: ping until it answers, for at most
    `timeout_s` (RTAI_REDIS_START_TIMEOUT_S); a wrong URL (TLS mismatch, bad certificate, missing or
    wrong password) fails at once. The error names the problem, never the password."""
    limit = redis_start_timeout_s() if timeout_s is None else timeout_s
    probe = redis.Redis.from_url(
        url, socket_timeout=CONNECT_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )
    deadline = time.monotonic() + limit
    backoff = Backoff(first=0.1, cap=1.0)
    try:
        while True:
            try:
                probe.ping()
                return
            except redis.RedisError as exc:
                delay = backoff.next()
                if permanent(probe, exc) or time.monotonic() + delay > deadline:
                    raise RedisUnavailableError(diagnose(probe, exc, waited_s=limit)) from None
                log.info("Redis not reachable yet (%s); retrying", type(exc).__name__)
                time.sleep(delay)
    finally:
        probe.close()


def wait_until_up(
    client: redis.Redis, *, what: str, stop: Callable[[], bool] = lambda: False, max_wait_s: float | None = None
) -> bool:
    """Ping with exponential backoff until Redis answers (True) or stop()/max_wait_s says give up."""
    backoff, waited = Backoff(first=0.1, cap=MAX_BACKOFF_S), 0.0
    while True:
        try:
            client.ping()
            return True
        except redis.AuthenticationError as exc:
            raise RedisUnavailableError(f"{what}: Redis refused the credentials in the URL: {exc}") from exc
        except redis.RedisError as exc:
            if stop() or (max_wait_s is not None and waited >= max_wait_s):
                return False
            delay = backoff.next()
            log.warning("%s: Redis unreachable (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            waited += delay


#: Redis errors that mean "Redis is up but refuses writes now": out of memory under `noeviction`,
#: a read-only replica, a failed RDB save with `stop-writes-on-bgsave-error`. They pass; the fleet
#: backs off and retries instead of failing batches or dying.
_WRITE_REJECTED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)


def write_rejected(exc: BaseException) -> bool:
    """True when Redis refused a write for a reason that passes (OOM, READONLY, MISCONF)."""
    if isinstance(exc, _WRITE_REJECTED):
        return True
    return isinstance(exc, redis.ResponseError) and "MISCONF" in str(exc)[:300]


def describe(exc: BaseException) -> str:
    """A short text for a Redis error, for logs: never the command's arguments (a pipeline's error
    names the command with its arguments, e.g. a batch's JPEG bytes)."""
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "Redis is out of memory (maxmemory reached, noeviction): writes refused"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "Redis is a read-only replica: writes refused"
    text = str(exc)
    if "of pipeline caused error: " in text:
        text = text.split("of pipeline caused error: ", 1)[1]
    if "MISCONF" in text[:300]:
        return "Redis refuses writes (MISCONF: its last snapshot failed)"
    text = text.encode("ascii", "backslashreplace").decode()
    return f"{type(exc).__name__}: {text[:200]}"
