"""Exported engines (ONNX, TensorRT) cached under the weights directory, keyed by what they fit.

An exported file only fits the inputs it was built for: one model, format, precision, batch and
imgsz, and a TensorRT engine only the GPU architecture and TensorRT version that built it. The cache
lives in `<weights dir>/engines/` (RTAI_WEIGHTS_DIR, else Ultralytics' weights cache); each file's
name is its key, and `manifest.json` holds each file's key and SHA-256, so a file that was truncated,
overwritten or built elsewhere does not match and the worker falls back to the `.pt`. Files are found
by model *name* (common/models.py), never by a path from a request; ONNX files are protobufs (no
pickle), TensorRT engines are loaded only from this directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from common import models as names
from common.config import weights_dir
from common.errors import ModelError

from . import models

log = logging.getLogger(__name__)

FORMATS = ("onnx", "engine")
SUFFIX = {"onnx": ".onnx", "engine": ".engine"}
MANIFEST = "manifest.json"
_lock = threading.Lock()


@dataclass(frozen=True)
class EngineKey:
    """What an exported file fits. `arch` (e.g. sm90) and `trt` (TensorRT version) only for engines."""

    model: str
    format: str
    precision: str  # fp16 | fp32
    batch: int
    imgsz: int
    arch: str | None = None
    trt: str | None = None

    @property
    def filename(self) -> str:
        stem = Path(models.canonical(self.model)).name.removesuffix(".pt").removesuffix(".yaml")
        parts = [stem, self.format, self.precision, f"b{self.batch}", f"{self.imgsz}"]
        if self.format == "engine":
            parts += [self.arch or "noarch", f"trt{self.trt or 'none'}"]
        return "-".join(parts) + SUFFIX[self.format]


def cache_dir() -> Path:
    root = weights_dir() or models.ultralytics_weights_dir()
    return Path(root) / "engines"


def device_key(model: str, fmt: str, *, half: bool, batch: int, imgsz: int, device: str) -> EngineKey:
    """The key an engine for this worker's device must have (arch and TensorRT version of this host)."""
    if fmt not in FORMATS:
        raise ModelError(f"engine format {fmt!r}: use one of {', '.join(FORMATS)}")
    names.check_name(model)
    arch = trt = None
    if fmt == "engine":
        arch, trt = cuda_arch(device), tensorrt_version()
    return EngineKey(model, fmt, "fp16" if half else "fp32", batch, imgsz, arch, trt)


def cuda_arch(device: str) -> str | None:
    """sm80, sm90, ... of `device`; None on CPU or without CUDA."""
    import torch  # noqa: PLC0415

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return f"sm{major}{minor}"


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # noqa: PLC0415  # ty: ignore[unresolved-import]
    except ImportError:
        return None
    return str(tensorrt.__version__)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: Path | None = None) -> dict[str, dict]:
    path = (root or cache_dir()) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("engine cache manifest %s unreadable (%s): no exported engine is used", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_manifest(root: Path, manifest: dict[str, dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(tmp, root / MANIFEST)


def lookup(key: EngineKey) -> tuple[Path | None, str]:
    """The cached file for `key` and "" when it is there and intact; else None and why not."""
    root = cache_dir()
    entry = read_manifest(root).get(key.filename)
    path = root / key.filename
    if entry is None:
        want = (key.model, key.format)
        others = [
            name
            for name, v in read_manifest(root).items()
            if isinstance(v.get("key"), dict) and (v["key"].get("model"), v["key"].get("format")) == want
        ]
        hint = f" (cached for other keys: {', '.join(sorted(others))})" if others else ""
        return None, f"no {key.format} engine for {key.filename}{hint}"
    if entry.get("key") != asdict(key):
        return None, f"{key.filename}: manifest key {entry.get('key')} does not match {asdict(key)}"
    if not path.is_file():
        return None, f"{path} is listed but missing"
    if path.stat().st_size != entry.get("size") or sha256(path) != entry.get("sha256"):
        return None, f"{path} is corrupt or stale (size/SHA-256 differ from the manifest)"
    return path, ""


def record(key: EngineKey, built: Path) -> Path:
    """Move a freshly built file into the cache under its key, and list it in the manifest."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / key.filename
    with _lock:
        shutil.move(str(built), target)
        manifest = read_manifest(root)
        manifest[key.filename] = {"key": asdict(key), "sha256": sha256(target), "size": target.stat().st_size}
        _write_manifest(root, manifest)
    return target


def export(model: str, fmt: str, *, half: bool, batch: int, imgsz: int, device: str = "cpu") -> tuple[Path, bool]:
    """Build (or find) the `fmt` engine of `model`; returns its path and whether it was built now.

    Idempotent: an intact cached file for the same key is returned as is. ONNX is exported with a
    dynamic batch (1..batch) and input size, so one file serves partial batches and the letterbox's
    minimal rectangle; TensorRT engines are static (batch x 3 x imgsz x imgsz, FP16 with --half)."""
    if fmt == "engine" and not device.startswith("cuda"):
        raise ModelError("a TensorRT engine is built on the GPU it will run on: use --device cuda:N")
    half = half and device.startswith("cuda")  # FP16 only where it runs fast: on the GPU
    if device.startswith("cuda") and cuda_arch(device) is None:
        raise ModelError(f"cannot export on {device}: torch sees no CUDA device here")
    key = device_key(model, fmt, half=half, batch=batch, imgsz=imgsz, device=device)
    found, _ = lookup(key)
    if found is not None:
        return found, False
    from ultralytics.utils import LOGGER  # noqa: PLC0415

    yolo = models.load(model)
    work = Path(tempfile.mkdtemp(prefix="rtai-export-"))
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # its progress lines go to stdout, which holds our answers
    try:
        # The exporter writes next to the model's pt_path: point it at a scratch folder, not at the
        # bundled assets or the weights directory.
        yolo.model.pt_path = str(work / Path(key.filename).with_suffix(".pt").name)
        out = yolo.export(
            format=fmt,
            imgsz=imgsz,
            batch=batch,
            **({"half": True} if half else {}),  # the flag alone is deprecated-warned
            dynamic=fmt == "onnx",
            simplify=True,
            device=device.replace("cuda:", "") if device.startswith("cuda") else "cpu",
            verbose=False,
        )
        built = Path(out)
        if not built.is_file():
            raise ModelError(f"export of {model} to {fmt} produced no file")
        return record(key, built), True
    except (RuntimeError, ValueError, OSError, ImportError, AssertionError) as exc:
        raise ModelError(f"export of {model} to {fmt} failed: {exc}") from exc
    finally:
        LOGGER.setLevel(level)
        shutil.rmtree(work, ignore_errors=True)
