"""The import graph of the shipped packages (docs/design.md "Layout"), read with `ast` without importing:
common imports no role; producer and worker never import each other; nothing shipped imports devkit;
only control imports control; realtime_ai imports only common and worker; no two modules import
each other, even lazily; no worker module is over 450 lines. Plus two process checks: a worker's
job modules load neither the API nor click, and `python -m control --help` no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ..helpers import ROOT, parse_python

SHIPPED = ("common", "producer", "worker", "realtime_ai", "control", "analytics")
PROJECT = {*SHIPPED, "devkit", "tests", "benchmarks", "scripts"}

#: package -> project packages it must not import
FORBIDDEN = {
    "common": PROJECT - {"common"},
    "producer": {"worker", "control", "realtime_ai", "analytics", "devkit", "tests", "benchmarks", "scripts"},
    "worker": {"producer", "control", "realtime_ai", "analytics", "devkit", "tests", "benchmarks", "scripts"},
    "realtime_ai": PROJECT - {"realtime_ai", "common", "worker"},
    "control": {"devkit", "tests", "benchmarks", "scripts"},
    "analytics": PROJECT - {"analytics", "common"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages that `path` imports by absolute name (anywhere, lazy imports too).
    Relative imports stay inside the file's own package."""
    found = set()
    for node in ast.walk(parse_python(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PROJECT
    return found


def shipped_files() -> list[Path]:
    return sorted(p for package in SHIPPED for p in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules `path` imports (absolute or relative, lazy imports too); `from pkg import sub`
    counts as importing the submodule, not the package's __init__."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found: set[str] = set()
    for node in ast.walk(parse_python(path)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names} & modules
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            subs = {f"{target}.{alias.name}" for alias in node.names} & modules
            found |= subs
            if len(subs) < len(node.names) and target in modules:
                found.add(target)
    found.discard(module_name(path))
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_two_modules_import_each_other():
    """Not even through a lazy import (common/config.py and common/models.py once did)."""
    files = shipped_files()
    modules = {module_name(p) for p in files}
    graph = {module_name(p): module_imports(p, modules) for p in files}
    assert graph["common.config"] >= {"common.model_names"}  # the walk sees relative imports
    assert import_cycles(graph) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_no_worker_module_is_over_450_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "worker").rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > 450} == {}


def test_every_shipped_package_has_modules():
    for package in SHIPPED:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert len(shipped_files()) > 40


@pytest.mark.parametrize("package", SHIPPED)
def test_package_imports_only_what_the_layout_allows(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in wrong.items() if v} == {}


def test_pyproject_ships_every_package_and_not_devkit():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for package in SHIPPED
        for init in (ROOT / package).rglob("__init__.py")
    }
    assert listed == on_disk
    assert not any(name.split(".")[0] == "devkit" for name in listed)
    assert config["project"]["scripts"]["rtai"] == "control.cli:main"


def test_a_worker_process_loads_neither_the_api_nor_click():
    code = (
        "import sys, worker.jobs, worker.process\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "print(sorted(loaded & {'fastapi', 'uvicorn', 'starlette', 'click', 'control'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_rtai_help_does_not_import_torch():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "control", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Commands" in res.stdout and "worker" in res.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "control.cli" in imported
    assert not {name for name in imported if name.split(".")[0] in ("torch", "ultralytics", "fastapi")}
