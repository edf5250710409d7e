"""The API's front door, as one ASGI middleware that sees each request's headers before any body.

In order, for every HTTP request:
1. `Host` must be a name the operator allows (DNS rebinding: a hostile name that resolves to
   127.0.0.1 reaches the API, but its browser still sends that name): 421 otherwise.
2. A state-changing request (POST, PUT, PATCH, DELETE) that a browser sent from another origin is
   refused (CSRF, including `mode: "no-cors"`): its `Origin` must be this host and port, and a
   `Sec-Fetch-Site` of `cross-site`/`same-site` without such an Origin is refused. Clients that are
   not browsers send neither header and pass; the live page's same-origin fetches pass unchanged.
3. A request with a body and without the bearer token (when one is set) gets its 401 before a byte
   of the body is read.
4. A body over `max_body_bytes` is refused with 413: at once from `Content-Length`, or as soon as
   the bytes read pass the limit (chunked). A body that does not arrive within `body_timeout_s`
   gets 408. The app then gets the buffered body, so no handler ever sees more than the limit.
Every response gets the hardening headers (nosniff, no framing, the page's CSP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Host names every API answers: this machine's loopback names.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: The page loads its script and style from /static, images as data:/blob: URLs, and talks to
#: its own origin only; nothing may frame it.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: /docs (only when turned on) runs Swagger UI from its CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "frame-ancestors 'none'"
)
HARDENING = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]


def host_name(value: str) -> str:
    """The host part of a Host header or an Origin's authority, lower case, brackets off."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") > 1:  # a bare IPv6 address
        return value
    return value.split(":", 1)[0]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Which Host names the API answers: loopback, the bind address, and the operator's list.

    With a wildcard bind (0.0.0.0, ::) any IP-address Host passes too: an address cannot be
    rebound, only a name can. `*` in the list turns the check off.
    """

    def __init__(self, bind: str, extra: Iterable[str] = ()) -> None:
        names = {host_name(n) for n in extra if n.strip()}
        self.any = "*" in names
        self.wildcard_bind = host_name(bind) in ("0.0.0.0", "::", "")
        self.names = frozenset(LOOPBACK_HOSTS | names | {host_name(bind)})

    @classmethod
    def parse(cls, bind: str, text: str) -> HostPolicy:
        return cls(bind, text.split(","))

    def allows(self, host: str) -> bool:
        name = host_name(host)
        return self.any or name in self.names or (self.wildcard_bind and _is_ip(name))


class Guard:
    """The middleware: see the module docstring for what it checks, in which order."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        max_body_bytes: int,
        body_timeout_s: float,
        hosts: HostPolicy | None,
        docs_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.bearer = None if token is None else f"Bearer {token}".encode()
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.hosts = hosts
        self.docs_paths = docs_paths
        self._too_large = f"request body over {max_body_bytes} bytes (RTAI_API_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._hardened(scope, send)
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.hosts is not None and not self.hosts.allows(host):
            why = f"host {host_name(host)[:100]!r} is not one this API answers (RTAI_API_ALLOWED_HOSTS)"
            await _refuse(send, 421, why)
            return
        if scope["method"] in STATE_CHANGING and (reason := self._cross_origin(headers)):
            await _refuse(send, 403, reason)
            return
        length = headers.get("content-length")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        if has_body and self.bearer is not None and not self._authorized(scope):
            await _refuse(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _refuse(send, 413, self._too_large)
            return
        body = await self._read_body(receive, send)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)

    def _hardened(self, scope: Scope, send: Send) -> Send:
        csp = DOCS_CSP if scope["path"] in self.docs_paths else PAGE_CSP

        async def hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *HARDENING,
                    (b"content-security-policy", csp.encode()),
                ]
            await send(message)

        return hardened

    @staticmethod
    def _cross_origin(headers: Headers) -> str | None:
        """Why a browser's state-changing request is cross-origin, or None: its Origin must be
        this very host and port (the Host, already checked above)."""
        origin = headers.get("origin")
        if origin is not None:
            authority = origin.split("://", 1)[1] if "://" in origin else ""
            if not authority or authority.lower() != headers.get("host", "").lower():
                return f"cross-origin request from {origin[:100]!r} refused"
            return None
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "cross-origin request refused (Sec-Fetch-Site)"
        return None

    def _authorized(self, scope: Scope) -> bool:
        assert self.bearer is not None
        given = [v for k, v in scope["headers"] if k == b"authorization"]
        return len(given) == 1 and secrets.compare_digest(given[0], self.bearer)

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None once a refusal is sent (too large, too slow) or the client left."""
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    if len(body) > self.max_body_bytes:
                        await _refuse(send, 413, self._too_large)
                        return None
                    if not message.get("more_body", False):
                        return bytes(body)
        except TimeoutError:
            await _refuse(send, 408, f"request body not received within {self.body_timeout_s:g} s")
            return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON error that closes the connection, so an unread body is never read."""
    content = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})
