"""The live view's push endpoint (Server-Sent Events) and the cookie that lets EventSource in.

EventSource cannot set an Authorization header, so with a token set the page first calls
`POST /live/session` with its bearer token; the answer sets an HttpOnly, SameSite=Strict cookie
scoped to the live endpoints, holding an HMAC of the token (never the token itself). The cookie
opens only these read-only endpoints: every other route still wants the header, so a forged
cross-site request can neither read nor change anything. A token in the query string would end up
in browser history and proxy logs; the cookie does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Cookie, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from common import keys

from ..livefeed import LiveFeed
from . import PREFIX

COOKIE = "rtai_live"


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"rtai live view", hashlib.sha256).hexdigest()


def make_router(feed: LiveFeed, *, token: str | None, auth: Callable[..., None]) -> APIRouter:
    # Not in the OpenAPI document: the page's own plumbing (an endless event stream), described in README.
    router = APIRouter(include_in_schema=False)

    def cookie_auth(request: Request, rtai_live: str | None = Cookie(default=None)) -> None:
        if token is None:
            return
        if rtai_live is not None and secrets.compare_digest(rtai_live, cookie_value(token)):
            return
        header = request.headers.get("authorization")
        if header is not None and secrets.compare_digest(header.encode("latin-1"), f"Bearer {token}".encode()):
            return
        raise HTTPException(status_code=401, detail="live view: call POST /live/session with the bearer token first")

    @router.post("/live/session", dependencies=[Depends(auth)])
    def session(response: Response) -> dict:
        """Exchange the bearer token for the live view's cookie (EventSource sends no header)."""
        if token is not None:
            response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path=f"{PREFIX}/live")
        return {"token_required": token is not None}

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
