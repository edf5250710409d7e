"""Why a process could not reach Redis, in words an operator can act on.

A wrong URL fails in ways redis-py reports vaguely ("Connection reset by peer" for a plain-text
client talking to a TLS server, a handshake timeout for the reverse). When a ping fails this
module probes the address once more (a TLS handshake, or a plain-text PING) to name the problem.
Messages name host and port, never the URL: it may hold a password.
"""

from __future__ import annotations

import socket
import ssl

import redis
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

#: The probe's own connect/read limit.
PROBE_TIMEOUT_S = 2.0


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 10:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _is_tls(client: redis.Redis) -> bool:
    return issubclass(client.connection_pool.connection_class, redis.SSLConnection)


def _sentinels(client: redis.Redis) -> tuple[str, str] | None:
    """(service, "host:port, ...") of a client that finds its master through sentinels, else None."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    hosts = []
    for sentinel in list(pool.sentinel_manager.sentinels):
        kw = sentinel.connection_pool.connection_kwargs
        hosts.append(f"{kw.get('host', '?')}:{kw.get('port', '?')}")
    return str(pool.service_name), ", ".join(hosts)


def _where(client: redis.Redis) -> str:
    found = _sentinels(client)
    if found is not None:
        return f"the master of {found[0]!r} (sentinels {found[1]})"
    kw = client.connection_pool.connection_kwargs
    if "path" in kw:
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


def permanent(client: redis.Redis, exc: BaseException) -> bool:
    """Errors no wait will fix: credentials, TLS mismatch or certificate (vs. nothing listening yet)."""
    if _is_tls(client) and _find(exc, TimeoutError) is not None and _speaks_plain_resp(client):
        return True
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return True
    if isinstance(exc, redis.ResponseError) and "AUTH" in str(exc):
        return True
    if _find(exc, ssl.SSLError) is not None:
        return True
    return isinstance(exc, redis.ConnectionError) and _find(exc, ConnectionResetError) is not None


def diagnose(client: redis.Redis, exc: BaseException, *, waited_s: float) -> str:
    """One sentence naming what is wrong with reaching Redis through `client`."""
    where = _where(client)
    text = str(exc)
    tls = _is_tls(client)
    if isinstance(exc, redis.AuthenticationError) or isinstance(exc, redis.ResponseError) and "AUTH" in text:
        if "WRONGPASS" in text or "invalid username-password" in text:
            return f"Redis at {where} refused the password in the URL (wrong password or user name)"
        if "without any password configured" in text:
            return f"Redis at {where} has no password: remove it from the URL"
        form = (
            "redis+sentinel://:PASSWORD@host:26379,host2:26379/SERVICE/0"
            if _sentinels(client) is not None
            else "redis://:PASSWORD@host:port/0"
        )
        return f"Redis at {where} needs a password (no credentials in the URL): put it in the URL as {form}"
    verify = _find(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        reason = getattr(verify, "verify_message", "") or "untrusted certificate"
        return (
            f"TLS certificate verify failed for {where}: {reason} "
            "(point ssl_ca_certs in the URL at the CA that signed the server's certificate)"
        )
    if tls and (_find(exc, ssl.SSLError) is not None or _find(exc, TimeoutError) is not None):
        if _speaks_plain_resp(client):
            return f"TLS handshake failed: the server at {where} is not TLS (use redis://)"
        return f"TLS handshake with {where} failed: {type(exc).__name__}"
    if isinstance(exc, MasterNotFoundError) and (found := _sentinels(client)) is not None:
        return (
            f"no sentinel names a master for {found[0]!r} (sentinels {found[1]}; waited {waited_s:g} s): are they "
            f"running and monitoring {found[0]!r}, and is the URL's sentinel_password right?"
        )
    if _find(exc, ConnectionRefusedError) is not None or "Connection refused" in text:
        return f"nothing listens at {where} (waited {waited_s:g} s; is Redis running? is the port right?)"
    if _find(exc, socket.gaierror) is not None:
        return f"cannot resolve the Redis host in {where}"
    if not tls and _speaks_tls(client):
        return f"the server at {where} speaks TLS: use rediss:// (with ssl_ca_certs=...)"
    if isinstance(exc, redis.TimeoutError) or _find(exc, TimeoutError) is not None:
        return f"no answer from {where} within {waited_s:g} s"
    return f"cannot reach Redis at {where}: {type(exc).__name__}: {text[:200]}"


def _address(client: redis.Redis) -> tuple[str, int] | None:
    kw = client.connection_pool.connection_kwargs
    if "host" not in kw:
        return None
    return str(kw["host"]), int(kw.get("port", 6379))


def _speaks_tls(client: redis.Redis) -> bool:
    """True when a TLS handshake (no verification: this only asks what the server speaks) works."""
    addr = _address(client)
    if addr is None:
        return False
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(addr, timeout=PROBE_TIMEOUT_S) as raw, ctx.wrap_socket(raw) as s:
            return bool(s.version())
    except (OSError, ssl.SSLError):
        return False


def _speaks_plain_resp(client: redis.Redis) -> bool:
    """True when the server answers a plain-text PING with a RESP reply."""
    addr = _address(client)
    if addr is None:
        return False
    try:
        with socket.create_connection(addr, timeout=PROBE_TIMEOUT_S) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply[:1] in (b"+", b"-")
