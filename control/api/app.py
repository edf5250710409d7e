"""The control plane: REST on port 2000 (FastAPI), the older multi-GPU guide's surface.

Stateless: `start` writes the service as desired state to Redis, a producer daemon claims and
runs it; every read comes from Redis. Optional bearer token (RTAI_API_TOKEN / --token). Every
request passes the front door first (guards.py: Host, Origin, token before body, body size).
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from common.config import ApiSettings, build
from common.errors import RedisUnavailableError
from common.shards import GIVE_UP_S, Shards
from common.sources import SourcePolicy

from .guards import Guard, HostPolicy
from .livefeed import LiveFeed
from .routers import PREFIX, analytics, gpus, live, metrics, models, pages, services

__all__ = ["PREFIX", "create_app"]


def create_app(
    redis_url: str,
    *,
    token: str | None = None,
    limits: ApiSettings | None = None,
    hosts: HostPolicy | None = None,
) -> FastAPI:
    """The app. `hosts` None answers any Host (in-process use); `rtai api` always passes its policy."""
    limits = limits or build(ApiSettings)
    docs = "/docs" if limits.api_docs else None
    app = FastAPI(
        title="realtime-ai control plane",
        version="1.0",
        description="Start, stop and watch detection services on the realtime-ai fleet.",
        docs_url=docs,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.add_middleware(
        Guard,
        token=token,
        max_body_bytes=limits.api_max_body_bytes,
        body_timeout_s=limits.api_header_timeout_s,
        hosts=hosts,
        docs_paths=frozenset({docs} if docs else ()),
    )
    # Desired state on the home shard, each stream's keys on its own; a hung shard costs a request
    # GIVE_UP_S, not the usual 10 s and three retries.
    shards = Shards.from_url(redis_url, give_up_s=GIVE_UP_S)
    policy = SourcePolicy.parse(limits.api_allow_private, limits.media_root)

    def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        if token is None:
            return
        expected = f"Bearer {token}".encode()
        # Header values arrive as latin-1 text; compare bytes (compare_digest refuses non-ASCII str).
        if authorization is None or not secrets.compare_digest(authorization.encode("latin-1"), expected):
            raise HTTPException(
                status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"Redis unreachable: {exc}"})

    @app.exception_handler(RedisUnavailableError)
    async def shard_down(_request: Request, exc: RedisUnavailableError) -> JSONResponse:
        # The project's own words for it (a stream's shard that did not answer: what was and was not done)
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # A NaN or Infinity the client sent is echoed in `input`; JSON cannot carry it, so say it as text.
        return JSONResponse(status_code=422, content={"detail": _finite(jsonable_encoder(exc.errors()))})

    guarded = [Depends(auth)]
    app.include_router(services.make_router(shards, limits, policy), prefix=PREFIX, dependencies=guarded)
    app.include_router(gpus.make_router(shards), prefix=PREFIX, dependencies=guarded)
    app.include_router(models.make_router(), prefix=PREFIX, dependencies=guarded)
    app.include_router(metrics.make_router(shards), dependencies=guarded)
    app.include_router(analytics.make_router(shards), prefix=PREFIX, dependencies=guarded)
    add_live_view(app, redis_url, shards, token=token, auth=auth)
    return app


def add_live_view(
    app: FastAPI, redis_url: str, client: redis.Redis | Shards, *, token: str | None, auth: Callable[..., None]
) -> None:
    """The web page (`/`, `/stream/{id}`, `/static`) and its push endpoint (`/live`)."""
    feed = LiveFeed(redis_url, client)
    app.include_router(live.make_router(feed, token=token, auth=auth), prefix=PREFIX)
    app.include_router(pages.make_router())
    app.mount("/static", pages.static_files(), name="static")
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            yield state
        await feed.stop()

    app.router.lifespan_context = lifespan


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by its name, so it renders as JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
