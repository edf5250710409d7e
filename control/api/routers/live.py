"""The live view's push endpoint (Server-Sent Events) and the cookie that lets EventSource in.

EventSource cannot set an Authorization header, so with a token set the page first calls
`POST /live/session` with its bearer token; the answer sets an HttpOnly, SameSite=Strict cookie
scoped to the live endpoints, holding its issue time and an HMAC of that time keyed by the token (never the
token itself). It lasts COOKIE_MAX_AGE_S: the browser drops it then (Max-Age) and the API refuses an older
issue time, so a copied cookie stops working; changing the token revokes every cookie at once. It is
`Secure` when the page came over TLS (directly, or behind a proxy that says `X-Forwarded-Proto: https`). The
cookie
opens only these read-only endpoints: every other route still wants the header, so a forged
cross-site request can neither read nor change anything. A token in the query string would end up
in browser history and proxy logs; the cookie does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Cookie, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from common import keys

from ..livefeed import LiveFeed
from . import PREFIX

COOKIE = "rtai_live"
#: A live cookie opens the view for 12 hours (a working day), then the page asks again with its token.
COOKIE_MAX_AGE_S = 12 * 3600
#: Clocks of one host: an issue time this far in the future is still accepted.
COOKIE_CLOCK_SKEW_S = 60


def cookie_value(token: str, *, issued: int | None = None) -> str:
    """`<issue time>.<HMAC-SHA256 of it, keyed by the token>`."""
    issued = int(time.time()) if issued is None else issued
    mac = hmac.new(token.encode(), f"rtai live view {issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def cookie_valid(token: str, value: str, *, now: float | None = None) -> bool:
    """Signed by `token` and issued within the last COOKIE_MAX_AGE_S."""
    issued_s, _, _mac = value.partition(".")
    if not issued_s.isdigit() or len(issued_s) > 12:
        return False
    issued = int(issued_s)
    now = time.time() if now is None else now
    if not now - COOKIE_MAX_AGE_S <= issued <= now + COOKIE_CLOCK_SKEW_S:
        return False
    return secrets.compare_digest(value.encode(), cookie_value(token, issued=issued).encode())


def over_tls(request: Request) -> bool:
    """The page came over https: to the API itself, or to a proxy that says so."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def make_router(feed: LiveFeed, *, token: str | None, auth: Callable[..., None]) -> APIRouter:
    # Not in the OpenAPI document: the page's own plumbing (an endless event stream), in docs/live-view.md.
    router = APIRouter(include_in_schema=False)

    def cookie_auth(request: Request, rtai_live: str | None = Cookie(default=None)) -> None:
        if token is None:
            return
        if rtai_live is not None and cookie_valid(token, rtai_live):
            return
        header = request.headers.get("authorization")
        if header is not None and secrets.compare_digest(header.encode("latin-1"), f"Bearer {token}".encode()):
            return
        raise HTTPException(status_code=401, detail="live view: call POST /live/session with the bearer token first")

    @router.post("/live/session", dependencies=[Depends(auth)])
    def session(request: Request, response: Response) -> dict:
        """Exchange the bearer token for the live view's cookie (EventSource sends no header)."""
        if token is not None:
            response.set_cookie(
                COOKIE,
                cookie_value(token),
                max_age=COOKIE_MAX_AGE_S,
                httponly=True,
                samesite="strict",
                secure=over_tls(request),
                path=f"{PREFIX}/live",
            )
        return {"token_required": token is not None}

    @router.get("/live/status", dependencies=[Depends(auth)])
    def live_status() -> dict:
        """What the live feed holds (streams, pages) and what it dropped (bad messages, task restarts)."""
        return feed.status()

    @router.get("/live", dependencies=[Depends(cookie_auth)], response_class=StreamingResponse)
    async def live(request: Request, stream: str | None = Query(default=None, pattern=keys.STREAM_ID_PATTERN)):
        """text/event-stream: `fleet` about once a second; `frame` (preview + its result's boxes, or its
        tracked frame's on a tracked stream) per preview. With ?stream=ID only that stream's frames, at
        the stream page's faster preview rate, its recent `events` first and each new `event`."""
        page = feed.open(stream)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                if stream is not None:
                    yield await asyncio.to_thread(feed.recent_events, stream)
                while True:
                    yield await page.queue.get()
            finally:
                feed.close(page)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return router
