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
