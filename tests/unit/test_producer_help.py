"""`rtai producer --help` names every kind of source, `demo` included."""

from __future__ import annotations

from click.testing import CliRunner

from producer.cli import producer


def test_source_help_mentions_demo():
    out = CliRunner().invoke(producer, ["--help"], terminal_width=200).output
    line = next(x for x in out.splitlines() if x.lstrip().startswith("--source"))
    assert "demo" in line, line
