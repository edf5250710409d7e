"""`rtai events` and `rtai subscribe --tracks` through a Redis restart (a private, real redis-server,
SIGKILLed and started again on its port, as compose restarts it): both subscribe again, fill the gap
from history (what the tracker wrote while they were away) and give nothing twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from analytics.eventlog import append_event
from analytics.feed import tracked_frames
from common import keys, scripts
from common.wire import TrackedFrame, encode_tracked
from control.redis_server import PrivateRedis

from ..helpers import Procs, wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def private() -> Iterator[list[PrivateRedis]]:
    """A private redis-server (the last of the list: a restart appends the new one)."""
    servers = [PrivateRedis()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def track(client: redis.Redis, seq: int, stream: str = "cam") -> None:
    """A tracked frame and an event of it, written as the tracking stage writes them."""
    frame = TrackedFrame(stream, seq, time.time(), time.time(), time.time(), "rtai-shapes", 640, 480)
    client.eval(
        scripts.EMIT_TRACKS.source,
        2,
        keys.tracks_channel(stream),
        keys.tracks_history(stream),
        100,
        encode_tracked(frame),
    )
    event = {"id": f"{stream}:{seq}:0", "type": "entered", "stream": stream, "seq": seq, "t": time.time()}
    append_event(client, event)


def test_events_and_tracks_subscribe_again_after_a_redis_restart_and_fill_the_gap(private, tmp_path):
    url = private[0].url
    procs = Procs(url, tmp_path)
    frames: list[int] = []
    client = redis.Redis.from_url(url, socket_timeout=5)
    feed = threading.Thread(
        target=lambda: frames.extend(f.seq for f in tracked_frames(client, ["cam"], deadline=time.monotonic() + 45)),
        daemon=True,
    )
    written = 0

    def write() -> None:
        nonlocal written
        written += 1
        track(redis.Redis.from_url(url), written)

    def event_seqs() -> list[int]:
        return [json.loads(line)["seq"] for line in procs.output(events).splitlines() if line.startswith("{")]

    try:
        events = procs.rtai("events", "cam", "--wait", "--timeout", "60")
        feed.start()

        def flowing() -> bool:
            write()
            return len(frames) >= 2 and len(event_seqs()) >= 2

        wait_for(flowing, timeout=40, interval=0.3, what="the first tracked frames and events")
        # Both have heard the last one: a Redis without persistence restarts without what it held,
        # so what it published to nobody before dying is gone for any reader.
        wait_for(lambda: frames[-1] == written and event_seqs()[-1] == written, timeout=10, what="the last one heard")
        private[0].kill()
        time.sleep(1.5)  # both see the loss and back off (0.1 s doubling)
        private.append(PrivateRedis(port=private[0].port))  # empty, as a Redis without persistence restarts
        gap = [written + 1, written + 2]
        write()  # written while they are still away: only the history has these two
        write()
        time.sleep(3)
        for _ in range(3):  # live again
            write()
            time.sleep(0.2)
        wait_for(lambda: frames and frames[-1] == written, timeout=15, what=f"tracked frame {written}: {frames}")
        wait_for(lambda: event_seqs()[-1:] == [written], timeout=15, what=f"event {written}: {event_seqs()}")
        # Everything from the first each one heard to the last, in order, once: the gap filled from history.
        assert frames == list(range(frames[0], written + 1)), f"tracked frames missed or repeated: {frames}"
        seqs = event_seqs()
        assert seqs == list(range(seqs[0], written + 1)), f"events missed or repeated: {seqs}\n{procs.output(events)}"
        assert set(gap) <= set(frames) & set(seqs)
        assert "subscribed again" in procs.output(events)
    finally:
        procs.close()


def test_a_quiet_subscription_on_a_healthy_redis_is_never_given_up(r, monkeypatch):
    """Its PINGs are answered (the PONG counts as heard), so a stream with nothing to say keeps its
    subscription: no loss, no resubscribe loop. PING after 0.3 s of quiet here instead of 3 s."""
    import common.subscription as subscription  # noqa: PLC0415

    monkeypatch.setattr(subscription, "PING_AFTER_S", 0.3)
    monkeypatch.setattr(subscription, "ANSWER_S", 0.3)

    def subscribed() -> redis.client.PubSub:
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(keys.events_channel("quiet"))
        return pubsub

    sub = subscription.Subscription(subscribed)
    heard = []
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        message = sub.get(0.1)
        if message is not None:
            heard.append(message["type"])
    sub.close()
    assert sub.losses == 0 and heard.count("pong") >= 3, heard


def _feeds(url: str, until: float) -> dict[str, Iterator[int]]:
    """Each reader as its CLI builds it (`connect`: the fleet's retries), as a feed of seqs."""
    from analytics.feed import live_events  # noqa: PLC0415
    from common.redis_client import connect  # noqa: PLC0415
    from control.subscriber import Subscriber  # noqa: PLC0415

    return {
        "results": (r.seq for r in Subscriber(connect(url), ["cam"]).results(deadline=until)),
        "tracks": (f.seq for f in tracked_frames(connect(url), ["cam"], deadline=until)),
        "events": (e["seq"] for e in live_events(connect(url), "cam", deadline=until)),
    }


def _write(client: redis.Redis, seq: int) -> None:
    """A result (as a worker settles it), a tracked frame and an event of frame `seq`."""
    from .test_livefeed_guard import _result  # noqa: PLC0415

    data = _result("cam", seq)
    client.xadd(keys.history("cam"), {"r": data})
    client.publish(keys.results_channel("cam"), data)
    track(client, seq)


@pytest.mark.parametrize("before", [3, 0])
def test_a_subscription_redis_drops_is_filled_even_before_anything_was_given(private, before):
    """Redis drops the subscribers' connections (`CLIENT KILL TYPE pubsub`, as it does to a subscriber
    past its output buffer limit) in the same MULTI that publishes two records, and is back at once.
    redis-py's retries had reconnected inside the read and subscribed again without a word, and
    those two records were lost. With `before` 0 nothing had been given yet when it happened (a
    quiet door: events are rare), which used to skip the refill. Every reader now gives every
    record once, in order."""
    writer = redis.Redis.from_url(private[0].url)
    got: dict[str, list[int]] = {}
    feeds = _feeds(private[0].url, time.monotonic() + 20)
    for kind, feed in feeds.items():
        got[kind] = []
        threading.Thread(target=lambda k=kind, f=feed: got[k].extend(f), daemon=True).start()
    time.sleep(1.0)  # every reader subscribed
    for seq in range(1, before + 1):
        _write(writer, seq)
    wait_for(lambda: all(len(seqs) == before for seqs in got.values()), timeout=10, what=f"the first {before}: {got}")
    with writer.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        _write(pipe, before + 1)
        _write(pipe, before + 2)
        pipe.execute()
    time.sleep(1.5)
    _write(writer, before + 3)
    want = list(range(1, before + 4))
    wait_for(lambda: all(seqs == want for seqs in got.values()), timeout=15, what=f"{want} in each: {got}")


def test_a_subscription_on_a_hung_redis_gives_up_soon_after_its_deadline(private):
    """Redis hangs (SIGSTOP) under `rtai subscribe --timeout 8`: the silent subscription is given up
    after 3 s, and opening it again on the hung server (which accepts the connection, then answers
    nothing) gives up after 3 s too, never held by the fleet's 10 s socket timeout and three retries
    (which held one open 133 s), so the reader returns within 3 s of its deadline."""
    import signal  # noqa: PLC0415

    from common.redis_client import connect  # noqa: PLC0415
    from control.subscriber import Subscriber  # noqa: PLC0415

    server = private[0]
    t0 = time.monotonic()
    reader = threading.Thread(
        target=lambda: list(Subscriber(connect(server.url), ["cam"]).results(deadline=t0 + 8)), daemon=True
    )
    reader.start()
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        reader.join(timeout=8 + 3 + 1 - (time.monotonic() - t0))
        took = time.monotonic() - t0
    finally:
        server.proc.send_signal(signal.SIGCONT)
    assert not reader.is_alive(), f"still reading {took:.1f} s after it began (deadline 8 s)"


def test_a_history_record_of_another_stream_is_given_not_raised(private):
    """A record in `cam`'s history that names another stream (written there by a stray writer)
    is read by the refill after a reconnect: it is handed out as the live path would, and the reader
    goes on; it raised KeyError and ended the reader."""
    writer = redis.Redis.from_url(private[0].url)
    got: list[tuple[str, int]] = []
    feed = tracked_frames(redis.Redis.from_url(private[0].url), ["cam"], deadline=time.monotonic() + 15)
    threading.Thread(target=lambda: got.extend((f.stream, f.seq) for f in feed), daemon=True).start()
    time.sleep(1.0)
    track(writer, 1)
    wait_for(lambda: got == [("cam", 1)], timeout=10, what=f"the first: {got}")
    with writer.pipeline(transaction=True) as pipe:
        pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        frame = TrackedFrame("other", 7, time.time(), time.time(), time.time(), "rtai-shapes", 640, 480)
        pipe.xadd(keys.tracks_history("cam"), {"t": encode_tracked(frame)})
        pipe.execute()
    time.sleep(1.5)
    track(writer, 2)
    wait_for(lambda: got == [("cam", 1), ("other", 7), ("cam", 2)], timeout=10, what=f"all three: {got}")
