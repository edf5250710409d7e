"""Models: the names a service may use."""

from __future__ import annotations

from fastapi import APIRouter

from common import models
from common.config import weights_dir

from ..models import ModelEntry, ModelsResponse


def make_router() -> APIRouter:
    router = APIRouter()

    @router.get("/models", response_model=ModelsResponse)
    def list_models() -> ModelsResponse:
        """Model names a service may use: the bundled model, stock YOLO11 (and whether this host has
        the file), and the files in RTAI_WEIGHTS_DIR."""
        entries = [ModelEntry(name=a.name, kind=a.kind, present=a.present) for a in models.available()]
        return ModelsResponse(models=entries, weights_dir_set=weights_dir() is not None)

    return router
