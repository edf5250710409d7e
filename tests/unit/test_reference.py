"""The reference pages (docs/reference/) are generated from the code and up to date: every option has
its help, every setting its meaning, every Redis key its catalogue row, every exit code its comment."""

from __future__ import annotations

from devkit import reference


def test_every_option_setting_key_and_exit_code_is_described():
    _pages, missing = reference.generate()
    assert missing == []


def test_the_committed_reference_pages_are_what_the_code_generates():
    pages, _missing = reference.generate()
    for name, text in pages.items():
        path = reference.OUT / name
        assert path.is_file(), f"docs/reference/{name} is missing: run python -m devkit.reference"
        assert path.read_text() == text, f"docs/reference/{name} is out of date: run python -m devkit.reference"


def test_a_new_flag_or_key_without_a_description_is_caught(monkeypatch):
    from common import keys  # noqa: PLC0415

    monkeypatch.setattr(keys, "NEW_THING", "rtai:newthing", raising=False)
    assert any("rtai:newthing" in gap for gap in reference.keys_page()[1])
    page, _ = reference.cli_page()
    assert "| `--engine` |" in page and "`ultralytics`" in page  # the worker's options are read, choices listed
