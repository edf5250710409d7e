"""Redis AUTH through the URL: the fleet works with the password, and refuses clearly without it."""

from __future__ import annotations

import subprocess

import pytest
import redis

from common.exitcodes import EXIT_REDIS

from ..helpers import Procs, free_port, wait_for
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(60)


def test_password_in_the_url(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            "s3cret",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        good = f"redis://:s3cret@127.0.0.1:{port}/0"
        r = redis.Redis.from_url(good)
        wait_for(lambda: _pings(r), timeout=10, what="redis with a password")
        sink(r, "cam1").push(frames(2))
        procs = Procs(good, tmp_path)
        try:
            assert procs.finish(procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")) == 0
            assert counts(r, "cam1")["published"] == 2
            bad = procs.rtai("status", env={"RTAI_REDIS_URL": f"redis://:wrong@127.0.0.1:{port}/0"})
            assert procs.finish(bad) == EXIT_REDIS
            assert "Traceback" not in procs.output(bad)
            worker = procs.rtai("worker", "--preload", "", env={"RTAI_REDIS_URL": f"redis://127.0.0.1:{port}/0"})
            assert procs.finish(worker) == EXIT_REDIS, "no password: a clear error, not an endless retry"
            assert "credentials" in procs.output(worker) or "Authentication" in procs.output(worker)
        finally:
            procs.close()
    finally:
        server.terminate()
        server.wait()


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False
