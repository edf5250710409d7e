"""How `rtai api` serves: uvicorn's h11 protocol with a request-header deadline and a connection cap.

uvicorn closes an idle keep-alive connection (`timeout_keep_alive`) but never one whose request
headers trickle in (slowloris); its `limit_concurrency` answers 503 yet keeps every socket open.
`guarded_protocol` closes a connection whose headers are not complete within the deadline. Past the
connection cap, a new connection evicts the one that has waited longest for its headers (so a
client that sends its request at once still gets in while slow ones hold the slots); when every
connection is inside a request (live pages), the new one is closed. The body's own deadline is the
middleware's (guards.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: File descriptors kept for Redis, logs and the live feed's sockets when the cap is sized to the fd limit.
FD_RESERVE = 64


def raise_fd_limit() -> int:
    """Raise this process' open-file soft limit to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft


def connection_cap(wanted: int, fd_limit: int) -> int:
    """The connection cap: what the operator asked, but never more than the fd limit allows."""
    return max(1, min(wanted, fd_limit - FD_RESERVE))


def guarded_protocol(*, header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol class that enforces the header deadline and the connection cap."""

    class GuardedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_deadline: asyncio.TimerHandle | None = None
            self._waiting_since = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections and not self._evict_slowest():
                log.warning("closing a connection: %d open, the cap is %d", len(self.connections), max_connections)
                transport.abort()
                return
            self._arm()

        def _evict_slowest(self) -> bool:
            """Close the connection that has waited longest for its request headers; False if none."""
            waiting = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c._header_deadline]
            if not waiting:
                return False
            oldest = min(waiting, key=lambda c: c._waiting_since)
            oldest._disarm()
            oldest.transport.abort()
            return True

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:  # this request's headers are in
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()  # the next request's headers get their own deadline

        def _arm(self) -> None:
            self._disarm()
            self._waiting_since = time.monotonic()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_late(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
