"""Events to an HTTP endpoint: a JSON POST signed with HMAC-SHA256 (`X-RTAI-Signature: sha256=<hex>`
of the body), retried with exponential backoff; after MAX_ATTEMPTS failures the event is counted in
the sink's `dead_letter` and kept in `rtai:sink:<name>` (last_dead), and delivery goes on. A token
bucket keeps POSTs under `rate` per second.

The receiver is not trusted: one delivery (connect, send, status, headers, the first MAX_RESPONSE_BYTES of
the body) has DELIVERY_TIMEOUT_S in all, however slowly the receiver trickles, the rest of a large response
is never read, no redirect is followed, and anything but a 2xx answer read in time (garbage, a truncated
or early-closed response, a reset) is a failed attempt: retried with backoff and counted in `failed`."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import redis

from common import keys
from common.errors import ConfigError, RtaiError
from common.redis_client import describe

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
BACKOFF_S = 0.2
BACKOFF_MAX_S = 5.0
#: One delivery, from connect to the last byte read, takes at most this long (a trickling receiver is cut off).
DELIVERY_TIMEOUT_S = 5.0
#: Of a receiver's response body only this much is read (an acknowledgement needs no more).
MAX_RESPONSE_BYTES = 4096
SIGNATURE_HEADER = "X-RTAI-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryError(RtaiError):
    """The receiver did not take an event: a non-2xx status, or no valid answer within the deadline."""


def _abort(conn: http.client.HTTPConnection) -> None:
    """The delivery's deadline passed: break whatever read or write is blocked on its socket."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class WebhookTarget:
    def __init__(
        self,
        url: str,
        *,
        secret: str,
        client: redis.Redis,
        name: str,
        rate: float = 50.0,
        attempts: int = MAX_ATTEMPTS,
        timeout: float = DELIVERY_TIMEOUT_S,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook URL {url!r}: expected http:// or https://")
        self.url, self.secret, self.client, self.name = url, secret, client, name
        self.parts = parts
        self.rate, self.attempts, self.timeout = rate, attempts, timeout
        self.tokens, self.t_tokens = rate, time.monotonic()

    def _take_token(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.t_tokens) * self.rate)
            self.t_tokens = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            time.sleep((1 - self.tokens) / self.rate)

    def _post(self, body: bytes) -> None:
        """One POST within self.timeout in all; DeliveryError (or an OSError / HTTPException) if not taken."""
        u = self.parts
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname or "", u.port, timeout=self.timeout)
        deadline = threading.Timer(self.timeout, _abort, (conn,))
        deadline.daemon = True
        t0 = time.monotonic()
        deadline.start()
        try:
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(self.secret, body)}
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            status, read = response.status, 0
            while read < MAX_RESPONSE_BYTES:
                chunk = response.read(MAX_RESPONSE_BYTES - read)
                if not chunk:
                    break
                read += len(chunk)
            if read < MAX_RESPONSE_BYTES and response.length:  # closed before its Content-Length
                raise DeliveryError(f"HTTP {status} answer truncated after {read} bytes")
        finally:
            deadline.cancel()
            conn.close()
        if time.monotonic() - t0 >= self.timeout:
            raise DeliveryError(f"no complete answer within {self.timeout:g} s")
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    def deliver(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, separators=(",", ":")).encode()
        delay = BACKOFF_S
        for attempt in range(1, self.attempts + 1):
            self._take_token()
            try:
                self._post(body)
                return True
            except (DeliveryError, OSError, http.client.HTTPException, ValueError) as exc:
                log.info("webhook %s: attempt %d for %s failed: %s", self.name, attempt, event.get("id"), exc)
                self._count("failed")
            if attempt < self.attempts:
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        log.warning("webhook %s: event %s dead-lettered after %d attempts", self.name, event.get("id"), self.attempts)
        self._count("dead_letter", last_dead=body)
        return True  # counted: acked so that delivery goes on

    def _count(self, field: str, *, last_dead: bytes | None = None) -> None:
        """A failed attempt or a dead letter, counted in the sink's hash on the home shard, as well as
        it can be: a Redis that does not answer loses the count (logged), never the delivery. (It
        raised, and the event was sent again and again while the home shard was down.)"""
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(keys.sink(self.name), field, 1)
                if last_dead is not None:
                    pipe.hset(keys.sink(self.name), "last_dead", last_dead)
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("webhook %s: %s not counted: %s", self.name, field, describe(exc))

    def close(self) -> None:
        pass
