"""Redis AUTH through the URL: the fleet works with the password, and refuses clearly without it."""

from __future__ import annotations

import pytest
import redis

from common.exitcodes import EXIT_REDIS
from common.redis_server import PrivateRedis

from ..helpers import Procs
from .fleet import counts, frames, sink

pytestmark = pytest.mark.timeout(60)


def test_password_in_the_url(tmp_path):
    server = PrivateRedis(password="s3cret")
    procs = Procs(server.url, tmp_path)
    try:
        r = redis.Redis.from_url(server.url)
        sink(r, "cam1").push(frames(2))
        assert procs.finish(procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")) == 0
        assert counts(r, "cam1")["published"] == 2
        bad = procs.rtai("status", env={"RTAI_REDIS_URL": f"redis://:wrong@127.0.0.1:{server.port}/0"})
        assert procs.finish(bad) == EXIT_REDIS
        assert "Traceback" not in procs.output(bad)
        worker = procs.rtai("worker", "--preload", "", env={"RTAI_REDIS_URL": f"redis://127.0.0.1:{server.port}/0"})
        assert procs.finish(worker) == EXIT_REDIS, "no password: a clear error, not an endless retry"
        assert "credentials" in procs.output(worker)
    finally:
        procs.close()
        server.stop()
