"""One way to open the fleet's Redis: from a URL (redis://, rediss:// with TLS, AUTH in the URL)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from .errors import RedisUnavailableError
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
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"cannot reach Redis at {redact(url)}: {exc}") from exc
    return client


def wait_until_up(
    client: redis.Redis, *, what: str, stop: Callable[[], bool] = lambda: False, max_wait_s: float | None = None
) -> bool:
    """Ping with exponential backoff until Redis answers (True) or stop()/max_wait_s says give up."""
    delay, waited = 0.1, 0.0
    while True:
        try:
            client.ping()
            return True
        except redis.AuthenticationError as exc:
            raise RedisUnavailableError(f"{what}: Redis refused the credentials in the URL: {exc}") from exc
        except redis.RedisError as exc:
            if stop() or (max_wait_s is not None and waited >= max_wait_s):
                return False
            log.warning("%s: Redis unreachable (%s); retrying in %.1f s", what, exc, delay)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, MAX_BACKOFF_S)
