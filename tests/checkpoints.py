"""Crafted checkpoints for the model-loading tests: each runs code, or needs a full unpickle."""

from __future__ import annotations

import datetime
import os
import zipfile
from pathlib import Path

import torch

from common.models import OWN_WEIGHTS


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save'd .pt whose unpickling runs `touch marker` (os.system)."""
    torch.save({"model": _Evil(marker)}, path)
    return path


def sneaky_checkpoint(path: Path, marker: Path) -> Path:
    """A .pt whose pickle names only allowed-looking modules (`ultralytics.utils.os`, `builtins.getattr`),
    so the global scan lets it through; under a full unpickle it still runs `touch marker`."""
    torch.save({}, path)
    cmd = f"touch {marker}".encode()
    raw = (
        b"\x80\x02cbuiltins\ngetattr\ncultralytics.utils\nos\nX\x06\x00\x00\x00system\x86R"
        + b"X"
        + len(cmd).to_bytes(4, "little")
        + cmd
        + b"\x85R."
    )
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for item, data in items:
            zout.writestr(item, raw if item.filename.endswith("data.pkl") else data)
    return path


def full_pickle_checkpoint(path: Path) -> Path:
    """The bundled model plus one harmless global the restricted unpickler does not allow."""
    ckpt = torch.load(OWN_WEIGHTS, map_location="cpu", weights_only=False)
    ckpt["saved_on"] = datetime.date(2026, 11, 29)
    torch.save(ckpt, path)
    return path


def broken_checkpoint(path: Path) -> Path:
    """The bundled model with its first convolution's weights cut to the wrong shape: it loads (safely),
    and every predict raises a RuntimeError, as a model broken for a reason other than loading would."""
    ckpt = torch.load(OWN_WEIGHTS, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            conv = ckpt[key].model[0].conv
            conv.weight = torch.nn.Parameter(conv.weight[:, :1].clone())
    torch.save(ckpt, path)
    return path
