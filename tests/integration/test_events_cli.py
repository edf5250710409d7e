"""`rtai events` with a stream nobody declared: it says so and offers the close match, instead of waiting."""

from __future__ import annotations

import pytest

from analytics.eventlog import append_event
from common import desired
from common.config import ProducerSettings


@pytest.mark.timeout(40)
def test_events_of_an_unknown_stream_says_so_and_offers_the_close_match(r, procs):
    desired.put(r, ProducerSettings(stream="door", source="demo"))
    typo = procs.rtai("events", "dor", "--timeout", "5")
    assert procs.finish(typo, timeout=20) == 2
    out = procs.output(typo)
    assert "no stream 'dor' is declared or known" in out and "Did you mean 'door'?" in out
    append_event(r, {"id": "door:1:0", "type": "entered", "stream": "door", "seq": 1})
    right = procs.rtai("events", "door", "--replay", "5", "--count", "1", "--timeout", "10")
    assert procs.finish(right, timeout=20) == 0
    assert '"door:1:0"' in procs.output(right)


@pytest.mark.timeout(40)
def test_subscribe_to_an_unknown_stream_says_so_and_offers_the_close_match(r, procs):
    desired.put(r, ProducerSettings(stream="door", source="demo"))
    typo = procs.rtai("subscribe", "dor", "--timeout", "5")
    assert procs.finish(typo, timeout=20) == 2
    out = procs.output(typo)
    assert "rtai subscribe: no stream 'dor' is declared or known" in out and "Did you mean 'door'?" in out
    waiting = procs.rtai("subscribe", "dor", "--wait", "--timeout", "1")
    assert procs.finish(waiting, timeout=20) == 0
    known = procs.rtai("subscribe", "door", "--timeout", "1")
    assert procs.finish(known, timeout=20) == 0
