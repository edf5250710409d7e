"""One way to open the fleet's Redis: from a URL.

- `redis://[[user]:password@]host:port/db`, `rediss://...` with TLS (`?ssl_ca_certs=...`), AUTH in
  the URL: one Redis.
- `redis+sentinel://[[user]:password@]host1:26379,host2:26379,.../SERVICE[/db]` (`rediss+sentinel://`
  for TLS to the master): a Sentinel deployment. The client asks the sentinels for the master of
  SERVICE (redis-py's `Sentinel.master_for`), and asks again after a failover: a connection to the old
  master, now a replica answering READONLY, is dropped and the next command goes to the new master.
  The password is the master's (and replicas'); `?sentinel_password=...` is the sentinels' own, when
  they have one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

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
#: A Sentinel-managed connection waiting this long for a reply asks the sentinels whether its
#: server is still the master (then again each time as long again).
PROBE_S = 1.0


SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
#: The TLS options a rediss+sentinel:// URL passes to the master's connections, as redis-py takes
#: them from a rediss:// URL's query (each value read from its text).
SSL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "ssl_ca_certs": str,
    "ssl_ca_path": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_cert_reqs": str,
    "ssl_check_hostname": lambda v: v.lower() in ("1", "true", "yes", "on"),
}
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    """A `redis+sentinel://` URL, parsed."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False
    #: The master's TLS options from the URL's query (`ssl_ca_certs`, `ssl_certfile`, ...), as a
    #: `rediss://` URL takes them (rediss+sentinel:// only).
    ssl_options: tuple[tuple[str, Any], ...] = ()

    def master_kwargs(self) -> dict[str, Any]:
        base = {"db": self.db, "username": self.username, "password": self.password, "ssl": self.ssl}
        return {**base, **dict(self.ssl_options)}

    def sentinel_kwargs(self, *, asyncio: bool = False) -> dict[str, Any]:
        # No retries on a sentinel: discovery moves on to the next one. redis-py's default (3 retries,
        # backing off up to 10 s) held every discovery ~40 s on a sentinel cut off by a partition.
        return {
            "password": self.sentinel_password,
            "socket_timeout": CONNECT_TIMEOUT_S,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "retry": AsyncRetry(NoBackoff(), 0) if asyncio else Retry(NoBackoff(), 0),
        }


def _host_port(item: str) -> tuple[str, str]:
    """A sentinel's `host:port`, `host`, `[v6]:port` or `[v6]` (the default port when none is given)."""
    if item.startswith("["):
        v6, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return "", ""
        return v6, rest[1:] if rest else str(DEFAULT_SENTINEL_PORT)
    if item.count(":") == 1:
        host, _colon, port = item.partition(":")
        return host, port
    return item, str(DEFAULT_SENTINEL_PORT)  # a bare host (or a bare v6 address, unbracketed)


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The Sentinel deployment `url` names, None for any other scheme; RedisUnavailableError (naming
    what is wrong, never the password) for a Sentinel URL that is not one."""
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        return None

    def bad(why: str) -> RedisUnavailableError:
        return RedisUnavailableError(
            f"bad Sentinel URL {redact(url)!r}: {why} (use redis+sentinel://[:password@]host:26379,host2:26379/SERVICE/db)"
        )

    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise bad(f"a sentinel address is not host:port ({exc}; IPv6 goes in brackets: [::1]:26379)") from None
    userinfo, _at, hosts = parts.netloc.rpartition("@")
    username, _colon, password = userinfo.partition(":") if userinfo else ("", "", "")
    sentinels = []
    for item in (entry.strip() for entry in hosts.split(",")):
        host, port = _host_port(item)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise bad(f"sentinel address {item!r} is not host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise bad("no service name" if not path else "too many path parts")
    if len(path) == 2 and not path[1].isdigit():
        raise bad(f"db {path[1]!r} is not a number")
    query = parse_qs(parts.query)
    unknown = sorted(k for k in query if k != "sentinel_password" and k not in SSL_OPTIONS)
    if unknown:
        known = ", ".join(["sentinel_password", *SSL_OPTIONS])
        raise bad(f"unknown option {unknown[0]!r} (known: {known}; ssl_* with rediss+sentinel:// only)")
    ssl = SENTINEL_SCHEMES[scheme.lower()]
    tls = tuple((k, SSL_OPTIONS[k](query[k][0])) for k in sorted(query) if k in SSL_OPTIONS)
    if tls and not ssl:
        raise bad(f"{tls[0][0]} needs rediss+sentinel:// (TLS to the master)")
    return SentinelUrl(
        sentinels=tuple(sentinels),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query["sentinel_password"][0] if query.get("sentinel_password") else None,
        ssl=ssl,
        ssl_options=tls,
    )


class _TimeoutRediscovers:
    """A Sentinel-managed connection that asks the sentinels for the master whenever it connects.

    redis-py 8 reconnects a dropped connection to the address it had (`send_packed_command` calls
    `connect_check_health`, not the Sentinel connection's `connect`), and retries a timed-out
    command on it. A master cut off by a partition (its packets vanish, nobody gets an error) then
    held every command for all its retries, 4 x 10 s, to the old address, although the sentinels
    had promoted a replica after 2 s (tests/chaos/test_sentinel_partition.py). Here a timed-out
    read drops the socket, every connect asks the sentinels first, and a reply that is a second
    late makes the connection ask them whether its server is still the master."""

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        pool = self.connection_pool  # type: ignore[attr-defined]
        if not self._sock and pool.is_master:  # type: ignore[attr-defined]
            self.host, self.port = pool.get_master_address()
        return super().connect_check_health(*args, **kwargs)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self._await_reply()
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.TimeoutError:
            self.disconnect()  # type: ignore[attr-defined]
            raise

    def _await_reply(self) -> None:
        """Wait for a reply a second at a time, and after each silent second ask the sentinels
        whether this is still the master. A master cut off by a partition, or hung, answers
        nothing and refuses nothing: without this a command waited out the whole socket timeout
        (10 s) after the sentinels had promoted a replica. A master the sentinels still name is
        waited for as before, up to the socket timeout."""
        limit = self.socket_timeout  # type: ignore[attr-defined]
        if not self.connection_pool.is_master or (limit is not None and limit <= PROBE_S):  # type: ignore[attr-defined]
            return
        waited = 0.0
        while not self.can_read(timeout=PROBE_S):  # type: ignore[attr-defined]
            waited += PROBE_S
            if self._master_gone():
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.ConnectionError(
                    f"{self.host}:{self.port} stopped answering and the sentinels no longer name it the master"
                )
            if limit is not None and waited >= limit:
                self.disconnect()  # type: ignore[attr-defined]
                raise redis.TimeoutError(f"Timeout reading from {self.host}:{self.port}")

    def _master_gone(self) -> bool:
        """True when the first sentinel that answers names another master, or holds this one down;
        False when it still names this one, or when no sentinel answers (nothing to go by)."""
        pool = self.connection_pool  # type: ignore[attr-defined]
        manager = pool.sentinel_manager
        for i, sentinel in enumerate(list(manager.sentinels)):
            try:
                state = sentinel.sentinel_masters().get(pool.service_name)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                continue
            if not state:
                continue
            if i:
                _ask_first(manager, sentinel)
            if not manager.check_master_state(state, pool.service_name):
                return True
            return (state["ip"], int(state["port"])) != (self.host, int(self.port))
        return False


class RediscoveringConnection(_TimeoutRediscovers, SentinelManagedConnection):
    pass


class RediscoveringSSLConnection(_TimeoutRediscovers, SentinelManagedSSLConnection):
    pass


def _client(url: str, **options: Any) -> redis.Redis:
    """A client for a plain or Sentinel URL, with `options` for its connections."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **options)
    keep = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
    group = Sentinel(list(sentinel.sentinels), sentinel_kwargs=sentinel.sentinel_kwargs(), **keep)  # type: ignore[no-untyped-call, unused-ignore]
    options["connection_class"] = RediscoveringSSLConnection if sentinel.ssl else RediscoveringConnection
    master = group.master_for(sentinel.service, redis_class=redis.Redis, **sentinel.master_kwargs(), **options)  # type: ignore[no-untyped-call, unused-ignore]
    return cast(redis.Redis, master)


def _ask_first(manager: Any, sentinel: Any) -> None:
    """Put the sentinel that answered first in the list, as redis-py's discovery does (one cut off
    costs 3 s each time). The list is replaced whole, never swapped in place: another thread may be
    swapping it (redis-py's discovery does, without a lock), and a copy taken mid-swap, which holds
    one sentinel twice and lacks another, is left alone rather than made permanent."""
    snapshot = list(manager.sentinels)
    if len({id(s) for s in snapshot}) != len(snapshot) or not any(s is sentinel for s in snapshot):
        return
    manager.sentinels = [sentinel, *(s for s in snapshot if s is not sentinel)]


def connect(url: str, *, check: bool = True, socket_timeout: float = SOCKET_TIMEOUT_S, retries: int = 3) -> redis.Redis:
    """A client for `url`; with check, fail now with a clear error if Redis does not answer.
    `socket_timeout` and `retries` (of a command that failed to connect or timed out) as given;
    a worker's lanes and the readers of several shards give up sooner (common/shards.GIVE_UP_S).

    A URL setting that names several deployments (shards, common/shards.py) gives the first one,
    the home shard, where the control plane's state lives; with check, every shard must answer."""
    urls = url.split()
    if len(urls) > 1:
        if check:
            for other in urls:
                check_at_start(other)
        return connect(urls[0], check=False, socket_timeout=socket_timeout, retries=retries)
    try:
        client = _client(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=min(CONNECT_TIMEOUT_S, socket_timeout),
            health_check_interval=15,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        )
    except ValueError as exc:
        raise RedisUnavailableError(f"bad Redis URL {redact(url)!r}: {redact_text(str(exc))}") from exc
    if check:
        check_at_start(url)
    return client


def subscribing(client: redis.Redis, timeout_s: float) -> redis.Redis:
    """A client for one pub/sub subscription: `client`'s server (for a Sentinel URL, the master its
    sentinels name) on a pool of its own, whose connections give up after `timeout_s`, are never
    retried and send no health check (common/subscription.py sends its own PINGs).

    redis-py runs every pub/sub read through the connection's retry policy: a dropped subscription
    (a restart within the retries, `CLIENT KILL`, Redis dropping a subscriber over its output
    buffer limit) was reconnected and subscribed again inside `get_message`, and what was published
    meanwhile was lost without a word. Here the drop is an error the subscription sees, and fills
    from history. The short timeout bounds a subscription opened on a server that accepts the
    connection and then answers nothing (hung): with the fleet's 10 s and three retries, one
    open held `rtai subscribe` over two minutes."""
    pool = client.connection_pool
    options = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    connect_s = options.get("socket_connect_timeout") or timeout_s
    options.update(
        socket_timeout=min(timeout_s, options.get("socket_timeout") or timeout_s),
        socket_connect_timeout=min(timeout_s, connect_s),
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    options["connection_class"] = pool.connection_class
    if isinstance(pool, SentinelConnectionPool):
        own: redis.ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call, unused-ignore]
            pool.service_name, pool.sentinel_manager, is_master=pool.is_master, **options
        )
    else:
        own = redis.ConnectionPool(**options)
    return redis.Redis(connection_pool=own)


def connect_async(url: str) -> aioredis.Redis:
    """An asyncio client for a plain or Sentinel URL (the live view's pub/sub)."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return aioredis.from_url(url)
    group = AsyncSentinel(list(sentinel.sentinels), sentinel_kwargs=sentinel.sentinel_kwargs(asyncio=True))  # type: ignore[no-untyped-call, unused-ignore]
    return cast(
        aioredis.Redis, group.master_for(sentinel.service, redis_class=aioredis.Redis, **sentinel.master_kwargs())
    )


def check_at_start(url: str, *, timeout_s: float | None = None) -> None:
    """For a process that has not reached Redis yet: ping until it answers, for at most
    `timeout_s` (RTAI_REDIS_START_TIMEOUT_S); a wrong URL (TLS mismatch, bad certificate, missing or
    wrong password) fails at once. The error names the problem, never the password."""
    limit = redis_start_timeout_s() if timeout_s is None else timeout_s
    probe = _client(
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
                lasting = permanent(probe, exc)
                if lasting or time.monotonic() + delay > deadline:
                    raise RedisUnavailableError(diagnose(probe, exc, waited_s=limit), permanent=lasting) from None
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
    """True when Redis refused a write for a reason that passes (OOM, READONLY, MISCONF, and
    NOREPLICAS: a master with `min-replicas-to-write` while too few replicas keep up)."""
    if isinstance(exc, _WRITE_REJECTED):
        return True
    head = str(exc)[:300]
    return isinstance(exc, redis.ResponseError) and ("MISCONF" in head or "NOREPLICAS" in head)


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
