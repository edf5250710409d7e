"""A producer daemon keeps every claim it holds while one of its streams is slow to stop."""

from __future__ import annotations

import socket
import time

import pytest

from common import desired, keys
from common.config import ProducerSettings

from ..helpers import free_port, wait_for

STREAMS = [f"cam{i}" for i in range(12)]


@pytest.mark.timeout(90)
def test_a_slow_stop_lapses_no_other_claim(r, redis_server, procs):
    # An RTSP "camera" that accepts and never answers: the stream's open hangs for its open timeout,
    # so removing the stream means waiting seconds for its producer to end.
    silent = socket.create_server(("127.0.0.1", free_port()), backlog=16)
    port = silent.getsockname()[1]
    try:
        for stream in STREAMS:
            desired.put(r, ProducerSettings(stream=stream, source="demo", loop=True, max_fps=2, redis_url=redis_server))
        desired.put(
            r,
            ProducerSettings(
                stream="hang", source=f"rtsp://127.0.0.1:{port}/s", open_timeout_s=8, redis_url=redis_server
            ),
        )
        daemon = procs.rtai("producer")
        claim_keys = [keys.claim(s) for s in [*STREAMS, "hang"]]
        owners = wait_for(lambda: all(r.mget(claim_keys)) and r.mget(claim_keys), timeout=30, what="every claim")
        owner = owners[0]
        wait_for(lambda: r.hget(keys.stream("cam0"), "state") == b"running", timeout=20, what="cam0 running")

        desired.remove(r, "hang")  # its producer now takes up to 8 s to stop
        lapses = []
        end = time.monotonic() + 7
        while time.monotonic() < end:
            for stream, held in zip(STREAMS, r.mget([keys.claim(s) for s in STREAMS]), strict=True):
                if held != owner:
                    lapses.append(stream)
            time.sleep(0.1)
        assert not lapses, f"claims lapsed while a stream stopped: {sorted(set(lapses))}"
        wait_for(lambda: not r.exists(keys.claim("hang")), timeout=15, what="the removed stream's claim released")
        assert daemon.poll() is None
    finally:
        silent.close()


@pytest.mark.timeout(90)
def test_a_claim_that_lapsed_while_redis_was_away_goes_back_to_its_holder(tmp_path):
    """Two daemons; Redis is away longer than a claim lease (a Sentinel failover with Compose's 2 s
    down-after takes 3-4 s; here a durable Redis SIGKILLed and restarted from its append-only file
    after 4 s), so the running stream's claim has lapsed when Redis is back. The daemon that held it
    takes it again and its producer carries on; the other daemon, which Redis failed a moment ago
    too, waits a lease before claiming anything, instead of restarting the stream on itself (it ran
    on both until the holder's next renewal)."""
    import threading  # noqa: PLC0415

    import redis  # noqa: PLC0415

    from control.redis_server import PrivateRedis  # noqa: PLC0415
    from producer.daemon import CLAIM_LEASE_S, ProducerDaemon  # noqa: PLC0415

    durable = ("--appendonly", "yes", "--appendfsync", "always")
    server = PrivateRedis(data_dir=tmp_path, extra_args=durable)
    servers = [server]
    daemons: list[ProducerDaemon] = []
    threads: list[threading.Thread] = []
    try:
        client = redis.Redis.from_url(server.url)
        desired.put(client, ProducerSettings(stream="cam0", source="demo", loop=True, max_fps=2, redis_url=server.url))
        for name in ("holder", "other"):
            daemon = ProducerDaemon(server.url, name=name)
            daemons.append(daemon)
            threads.append(threading.Thread(target=daemon.run, daemon=True))
            threads[-1].start()
            if name == "holder":
                wait_for(lambda: client.get(keys.claim("cam0")) == b"holder", timeout=20, what="the first claim")
        time.sleep(1.0)
        server.kill()
        time.sleep(CLAIM_LEASE_S + 1.0)  # the claim's lease runs out while Redis is away
        servers.append(PrivateRedis(port=server.port, data_dir=tmp_path, extra_args=durable))
        client = redis.Redis.from_url(server.url)
        owners = set()
        end = time.monotonic() + 2 * CLAIM_LEASE_S
        while time.monotonic() < end:
            owners.add(client.get(keys.claim("cam0")))
            time.sleep(0.05)
        holder, other = daemons
        assert other.starts == 0, "the other daemon started the stream the holder still ran"
        assert owners <= {b"holder", None} and b"holder" in owners, owners
        assert holder.lapsed >= 1 and "cam0" in holder.running
    finally:
        for daemon in daemons:
            daemon.stop()
        for thread in threads:  # every stream stopped while Redis still answers
            thread.join(timeout=20)
        for s in servers:
            s.stop()


@pytest.mark.timeout(60)
def test_a_daemon_that_redis_just_failed_leaves_lapsed_claims_a_lease_to_their_holder():
    """The rule behind the test above, shown on one tick: Redis hangs under a daemon's tick (SIGSTOP,
    0.6 s: longer than a quarter lease), so any claim may have lapsed meanwhile through no fault of
    its holder. That tick claims nothing; a tick a lease later claims the unclaimed stream."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import redis  # noqa: PLC0415

    from control.redis_server import PrivateRedis  # noqa: PLC0415
    from producer.daemon import ProducerDaemon  # noqa: PLC0415

    server = PrivateRedis()
    daemon = ProducerDaemon(server.url, name="other", lease_s=1.0)
    try:
        client = redis.Redis.from_url(server.url)
        desired.put(client, ProducerSettings(stream="cam0", source="demo", loop=True, max_fps=2, redis_url=server.url))
        server.proc.send_signal(signal.SIGSTOP)
        threading.Timer(0.6, server.proc.send_signal, (signal.SIGCONT,)).start()
        daemon.tick()
        assert client.get(keys.claim("cam0")) is None and daemon.starts == 0, "claimed right after Redis hung"
        time.sleep(1.1)
        daemon.tick()
        assert client.get(keys.claim("cam0")) == b"other" and daemon.starts == 1
    finally:
        server.proc.send_signal(signal.SIGCONT)
        daemon.stop()
        with daemon._lock:
            producers = [run.thread for run in daemon.running.values()]
            for stream in list(daemon.running):
                daemon._stop_stream(stream)
            stoppers = list(daemon.stopping.values())
        for thread in [*producers, *stoppers]:  # every stream stopped while Redis still answers
            thread.join(timeout=20)
        server.stop()
