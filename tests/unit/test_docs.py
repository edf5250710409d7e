"""The README stays a landing page that keeps its promises, and the docs site lists every page.
(`mkdocs build --strict` in .ci/run checks the links inside the site.)"""

from __future__ import annotations

import re

import yaml

from devkit.plot_benchmarks import parse

from ..helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_200_lines_and_keeps_the_two_commands():
    assert len(README.splitlines()) <= 200
    assert "make run " in README and "make test " in README  # the two commands, as .ci/run runs them
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_link_in_the_readme_points_at_a_file_that_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert len(local) > 10
    assert [link for link in local if not (ROOT / link).is_file()] == []


def _nav_files(nav: list) -> list[str]:
    out = []
    for entry in nav:
        for value in entry.values():
            out += _nav_files(value) if isinstance(value, list) else [value]
    return out


def test_the_site_lists_every_page_and_every_listed_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = set(_nav_files(config["nav"]))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert listed == on_disk
    assert config["strict"] is True


def test_the_plot_reads_the_benchmarks_own_table():
    table = """
| rep | streams | imgsz | fleet flags | ultra res/s | ultra p50/p95 ms (thr) | fleet res/s | .. |
|---|---|---|---|---|---|---|---|---|
| 0 | 1 | 320 | defaults | 28.5 | 111/140 (2) | 29.7 | 59/80 (2) | 1.04 | 0.53 | 0/0 | 1.00..1.00 |
| 1 | 1 | 320 | defaults | 30.5 | 101/130 (2) | 31.7 | 61/82 (2) | 1.04 | 0.60 | 0/0 | 1.00..1.00 |
| 0 | 4 | 640 | --prefetch settle | 9.0 | 300/400 (2) | 10.0 | 200/300 (2) | 1.11 | 0.66 | 0/0 | 0.90..1.10 |
"""
    cells = parse(table)
    assert cells == {
        (1, 320): {"u_fps": [28.5, 30.5], "f_fps": [29.7, 31.7], "u_p50": [111.0, 101.0], "f_p50": [59.0, 61.0]}
    }
