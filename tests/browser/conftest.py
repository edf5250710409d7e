"""A real browser for the live view: Debian's chromium driven by Playwright (no browser download).

When a browser test fails, the `page` fixture prints what every page of the test had: its console
(and page errors), the last messages of its push channel (window.__rtai.feed), what it last drew,
and the path of a screenshot of each page."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: Console lines kept per test (a failing page may log in a loop).
CONSOLE_KEPT = 200


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


# Module scope: Playwright's sync API keeps an asyncio loop running while it is open, and later
# tests (the guide's async API) call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run scripts/install_system_deps.sh (apt-get install chromium)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, request) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    console: list[str] = []

    def watch(p) -> None:
        p.on("console", lambda m: console.append(f"[{p.url}] {m.type}: {m.text}"))
        p.on("pageerror", lambda e: console.append(f"[{p.url}] pageerror: {e}"))

    context.on("page", watch)
    p = context.new_page()
    yield p
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        _dump(context, console[-CONSOLE_KEPT:])
    context.close()


PAGE_STATE_JS = """() => {
  const r = window.__rtai || {};
  const drawn = Object.entries(r.lastDrawn || {}).map(
    ([k, d]) => [k, {seq: d.seq, drawn: d.drawn, tracks: d.tracks, labels: d.labels, zones: d.zones}]);
  return {phase: r.phase, framesDrawn: r.framesDrawn, feed: r.feed, lastDrawn: Object.fromEntries(drawn),
          fleet: r.fleet && r.fleet.streams};
}"""


def _dump(context, console: list[str]) -> None:
    """Print what the test's pages had (pytest shows it under the failure, as teardown output)."""
    from playwright.sync_api import Error as PlaywrightError  # noqa: PLC0415

    out = Path(tempfile.mkdtemp(prefix="rtai-browser-"))
    print("\n---- browser console ----\n" + ("\n".join(console) or "(empty)"))
    for i, p in enumerate(context.pages):
        shot = out / f"page{i}.png"
        try:
            p.screenshot(path=str(shot))
            state = p.evaluate(PAGE_STATE_JS)
        except PlaywrightError as exc:  # a diagnostic of a failure must not hide the failure
            print(f"---- page {i} {p.url}: unreadable ({exc}) ----")
            continue
        print(f"---- page {i} {p.url}: screenshot {shot} ----\n{json.dumps(state, indent=None)[:8000]}")
