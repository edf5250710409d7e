"""Redis AUTH and TLS through the URL: the fleet works with them, and refuses clearly without."""

from __future__ import annotations

import subprocess

import pytest
import redis

from common.exitcodes import EXIT_REDIS
from control.redis_server import PrivateRedis

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


def test_tls_url(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = PrivateRedis(password="s3cret", tls=(cert, key))
    procs = Procs(server.url, tmp_path)
    try:
        assert server.url.startswith("rediss://")
        r = redis.Redis.from_url(server.url)
        sink(r, "cam1").push(frames(3))
        assert procs.finish(procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")) == 0
        assert counts(r, "cam1")["published"] == 3
        plain = procs.rtai("status", env={"RTAI_REDIS_URL": f"redis://:s3cret@127.0.0.1:{server.port}/0"})
        assert procs.finish(plain) == EXIT_REDIS, "a plain-text client is refused"
    finally:
        procs.close()
        server.stop()
