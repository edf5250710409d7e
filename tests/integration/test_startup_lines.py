"""`rtai api`, `rtai tracker` and `rtai sink` each say, in one line at start, what they serve and where."""

from __future__ import annotations

import pytest

from common import desired
from common.config import ProducerSettings

from ..helpers import free_port, wait_for

pytestmark = pytest.mark.timeout(60)


def _first_line(procs, proc, starts: str) -> str:
    wait_for(lambda: starts in procs.output(proc), timeout=30, what=f"{starts!r} in the log")
    return next(line for line in procs.output(proc).splitlines() if line.startswith(starts))


def test_services_print_what_they_serve_when_they_start(r, procs):
    desired.put(r, ProducerSettings(stream="door", source="demo", analytics={"track": {}}))
    port = free_port()
    api = procs.rtai("api", "--port", str(port), "--token", "s3cret")
    tracker = procs.rtai("tracker", "--name", "t1")
    sink = procs.rtai("sink", "webhook", "http://hook:pw@127.0.0.1:9/events", "--secret", "k", "--name", "hook")
    line = _first_line(procs, api, "rtai api:")
    assert f"serving http://127.0.0.1:{port}/" in line and "token required" in line and "s3cret" not in line
    line = _first_line(procs, tracker, "rtai tracker t1:")
    assert "declared now: door" in line
    line = _first_line(procs, sink, "rtai sink hook:")
    assert "new events" in line and "127.0.0.1:9/events" in line and "pw@" not in line
