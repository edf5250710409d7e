"""The live view's static page: `/` (fleet overview) and `/stream/{id}` (one stream), no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC_DIR)


def make_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    index = STATIC_DIR / "index.html"

    @router.get("/")
    def overview() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @router.get("/stream/{stream_id}")
    def stream_page(stream_id: str) -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return router
