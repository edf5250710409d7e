"""The Docker image's install step, run without a Docker engine: the files the Dockerfile copies
(its COPY lines over the build context less .dockerignore) are assembled in a temporary folder,
built into a wheel as `pip install .` would, and the installed result must run `rtai --help` and
import every role. A package pyproject lists but the image lacks fails here, as analytics once did."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest

from ..helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
ROLES = ["common", "producer", "worker", "control", "control.api", "analytics", "realtime_ai"]


def _instructions() -> list[tuple[str, list[str]]]:
    out = []
    for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.split()))
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, for the patterns this project uses: a pattern matches the path or
    one of its leading folders; `**/` matches at any depth."""
    parts = PurePosixPath(path).parts
    for pattern in patterns:
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatch(part, tail) for part in parts):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
            return True
    return False


def _context_files() -> list[str]:
    """The build context of a clean clone: the tracked files, less what .dockerignore leaves out."""
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in tracked.splitlines() if (ROOT / f).is_file() and not _ignored(f, patterns)]


def _assemble(dest: Path) -> Path:
    """Lay out what the image holds when its `pip install` runs; returns the folder it runs in."""
    context = _context_files()
    workdir = PurePosixPath("/")
    install_dir = None
    for word, args in _instructions():
        if word == "WORKDIR":
            workdir = workdir / args[0]
        elif word == "COPY":
            *sources, target = args
            to = workdir / target
            for src in sources:
                src = src.rstrip("/")
                for f in context:
                    if src == "." or f == src or f.startswith(src + "/"):
                        rel = f if src == "." else f[len(src) :].lstrip("/") or PurePosixPath(f).name
                        out = dest / str(to).lstrip("/") / rel
                        out.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / f, out)
        elif word == "RUN" and "pip install ." in " ".join(args):
            install_dir = workdir
            break
    assert install_dir is not None, "the Dockerfile has no `pip install .` step"
    return dest / str(install_dir).lstrip("/")


def test_the_dockerfile_copies_what_pyproject_installs(tmp_path):
    src = _assemble(tmp_path / "image")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]:
        folder = src / package.replace(".", "/")
        assert (folder / "__init__.py").is_file(), f"pyproject installs {package}, the image has no {folder.name}/"
    assert (src / "README.md").is_file(), "pyproject's readme"


@pytest.mark.timeout(300)
def test_the_image_context_builds_a_package_that_runs_every_role(tmp_path):
    src = _assemble(tmp_path / "image")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("realtime_ai-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    # Run from an empty folder with the installed copy first on the path, so nothing comes from the repo.
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    helped = subprocess.run(
        [sys.executable, "-m", "control", "--help"], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    assert "worker" in helped.stdout and "producer" in helped.stdout
    probe = (
        "import importlib, sys\n"
        f"for name in {ROLES!r}:\n"
        "    m = importlib.import_module(name)\n"
        "    print(name, m.__file__)\n"
        "import control.api.app, analytics.stage, worker.cli, producer.cli\n"
        "from common.config import ASSETS_DIR\n"
        "print('assets', sorted(p.name for p in ASSETS_DIR.iterdir()))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=run_dir, env=env, capture_output=True, text=True, timeout=120
    )
    assert imported.returncode == 0, imported.stderr
    lines = dict(line.split(" ", 1) for line in imported.stdout.splitlines())
    for name in ROLES:
        assert lines[name].startswith(str(site)), f"{name} came from {lines[name]}, not the built package"
    assert "rtai-shapes.pt" in lines["assets"] and "demo.mp4" in lines["assets"]
    static = site / "control" / "api" / "static"
    assert (static / "app.js").is_file() and (static / "index.html").is_file()
