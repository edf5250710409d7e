"""`rtai events` with a stream nobody declared: it says so and offers the close match, instead of waiting."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest

from analytics.eventlog import append_event
from common import desired, keys
from common.config import ProducerSettings
from control.redis_server import PrivateRedis

from ..helpers import free_port


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


@pytest.fixture(params=["dead", "hung"])
def second_shard(request) -> Iterator[str]:
    """The URL of a shard that is dead (nothing listens) or hung (SIGSTOPped: it takes connections
    and answers nothing)."""
    if request.param == "dead":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    server = PrivateRedis()
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield server.url
    finally:
        server.proc.send_signal(signal.SIGCONT)
        server.stop()


@pytest.mark.timeout(90)
def test_events_and_subscribe_read_a_live_shard_while_another_is_down(r, redis_server, second_shard, procs):
    """Two shards, the second one dead or hung: `rtai events` and `rtai subscribe` of a stream on
    the live shard work, results of every stream reach a subscriber to all, tracked frames of a
    stream on each shard come from the live one, and a stream nobody knows is named as unknown with
    the shard that did not answer (not a traceback, not a wait for the other shard)."""
    from common.shards import Shards  # noqa: PLC0415

    from .test_livefeed_guard import _result  # noqa: PLC0415
    from .test_resubscribe import track  # noqa: PLC0415

    url = f"{redis_server} {second_shard}"
    shards = Shards.from_url(url)
    live = next(s for s in (f"cam{i}" for i in range(64)) if shards.index_for(s) == 0)
    dead = next(s for s in (f"cam{i}" for i in range(64)) if shards.index_for(s) == 1)
    desired.put(r, ProducerSettings(stream=live, source="demo"))
    track(r, 1, live)
    env = {"RTAI_REDIS_START_TIMEOUT_S": "30"}
    events = procs.rtai("events", live, "--replay", "5", "--count", "1", "--timeout", "10", "--redis-url", url, env=env)
    assert procs.finish(events, timeout=20) == 0, procs.output(events)
    assert f'"{live}:1:0"' in procs.output(events)
    everything = procs.rtai("subscribe", "--json", "--count", "1", "--timeout", "20", "--redis-url", url)
    tracks = procs.rtai(
        "subscribe", "--tracks", live, dead, "--wait", "--json", "--count", "2", "--timeout", "20", "--redis-url", url
    )
    typo = procs.rtai("subscribe", live + "x", "--timeout", "5", "--redis-url", url)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (everything.poll() is None or tracks.poll() is None):
        r.publish(keys.results_channel(live), _result(live, 7))
        track(r, 2, live)
        track(r, 3, live)
        time.sleep(0.3)
    for proc in (everything, tracks):
        assert procs.finish(proc, timeout=5) == 0, procs.output(proc)
        assert "Traceback" not in procs.output(proc), procs.output(proc)
    assert '"seq": 7' in procs.output(everything)
    tracked = [json.loads(line)["seq"] for line in procs.output(tracks).splitlines() if line.startswith("{")]
    assert tracked == [2, 3], procs.output(tracks)
    assert procs.finish(typo, timeout=20) == 2
    out = procs.output(typo)
    assert f"no stream '{live}x' is declared or known" in out and f"Did you mean '{live}'?" in out
    assert "shard 1" in out and "did not answer" in out, out


@pytest.mark.timeout(40)
@pytest.mark.parametrize("names", [b"\xc1", b"\x05"], ids=["not-msgpack", "not-a-list"])
def test_subscribe_prints_class_numbers_when_the_stored_class_names_are_unreadable(r, procs, names):
    """A model's class-names key that holds no list of names (corrupt, or written by something
    else): `rtai subscribe` prints the box with its class number and says why, instead of exiting 1
    on its first result."""
    from .test_livefeed_guard import _result  # noqa: PLC0415

    desired.put(r, ProducerSettings(stream="cam", source="demo"))
    r.xadd(keys.history("cam"), {"r": _result("cam", 1)})
    r.set(keys.model_names("m"), names)
    sub = procs.rtai("subscribe", "cam", "--replay", "1", "--count", "1", "--timeout", "10")
    assert procs.finish(sub, timeout=20) == 0, procs.output(sub)
    out = procs.output(sub)
    assert "cam #1" in out and ": 0 0.90 [1,2,10,12]" in out, out
    assert "class names of m unreadable (printed as numbers)" in out, out


@pytest.mark.timeout(60)
def test_stream_add_and_rm_on_a_shard_that_is_down_say_so_in_seconds(r, redis_server, second_shard, procs):
    """`rtai stream add` of a stream whose shard is dead or hung exits 3 within seconds saying it is
    not declared, and declares nothing (it hung 164 s, after declaring it on the home shard); a stream
    on the live shard is added and removed as ever."""
    from common import desired  # noqa: PLC0415
    from common.shards import Shards  # noqa: PLC0415

    url = f"{redis_server} {second_shard}"
    shards = Shards.from_url(url)
    live = next(s for s in (f"cam{i}" for i in range(64)) if shards.index_for(s) == 0)
    away = next(s for s in (f"cam{i}" for i in range(64)) if shards.index_for(s) == 1)
    env = {"RTAI_REDIS_URL": url}
    t0 = time.monotonic()
    add = procs.rtai("stream", "add", away, "--source", "demo", env=env)
    assert procs.finish(add, timeout=30) == 3, procs.output(add)
    assert time.monotonic() - t0 < 15
    assert f"stream {away} not declared: its Redis shard does not answer" in procs.output(add), procs.output(add)
    assert away not in desired.streams(r)
    ok = procs.rtai("stream", "add", live, "--source", "demo", env=env)
    assert procs.finish(ok, timeout=30) == 0 and live in desired.streams(r), procs.output(ok)
    rm = procs.rtai("stream", "rm", live, env=env)
    assert procs.finish(rm, timeout=30) == 0 and live not in desired.streams(r), procs.output(rm)


@pytest.mark.timeout(60)
def test_stream_moves_lists_the_streams_a_new_shard_list_places_elsewhere(r, redis_server, procs):
    """`rtai stream moves "<new list>"`: every stream, declared or only running, that the new list
    places on another shard (a third shard added: only to it), and none of the others."""
    from common.shards import Shards  # noqa: PLC0415

    b = PrivateRedis()
    try:
        url = f"{redis_server} {b.url}"
        new = f"{url} redis://127.0.0.1:{free_port()}/0"
        old_shards, new_shards = Shards.from_url(url), Shards.from_url(new)
        streams = [f"cam{i}" for i in range(24)]
        for s in streams[:20]:
            desired.put(r, ProducerSettings(stream=s, source="demo"), data=old_shards.for_stream(s))
        for s in streams[20:]:  # run by `rtai producer --source` only: listed on their shard, not declared
            old_shards.for_stream(s).sadd(keys.STREAMS, s)
        moves = procs.rtai("stream", "moves", new, env={"RTAI_REDIS_URL": url})
        assert procs.finish(moves, timeout=30) == 0, procs.output(moves)
        listed = sorted(line.split()[0] for line in procs.output(moves).splitlines() if "->" in line)
        expected = sorted(s for s in streams if new_shards.index_for(s) == 2)
        assert expected and listed == expected, procs.output(moves)
        assert f"{len(expected)} of 24 stream(s) move" in procs.output(moves)
    finally:
        b.stop()
