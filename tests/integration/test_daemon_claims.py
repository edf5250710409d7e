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
