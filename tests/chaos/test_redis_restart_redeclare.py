"""Redis restarted empty: a producer daemon with --streams-file declares its camera list again (and
leaves alone a stream removed on purpose); Redis run with docker-compose.yml's settings keeps what
was declared across a crash."""

from __future__ import annotations

import time

import pytest
import redis
import yaml

from common import desired, keys, ledger
from control.redis_server import PrivateRedis

from ..helpers import ROOT, Procs, wait_for
from ..integration.fleet import counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CAMERAS = """
streams:
  - id: camf
    source: demo
    loop: true
    max_fps: 10
    batch_size: 2
"""
REDECLARED = "declared 1 stream(s) again"


def _published(r: redis.Redis, stream: str) -> int:
    return counts(r, stream)["published"]


def test_streams_file_is_declared_again_after_redis_restarts_empty_and_removals_are_kept(tmp_path):
    server = PrivateRedis()
    r = redis.Redis.from_url(server.url)
    procs = Procs(server.url, tmp_path)
    cameras = tmp_path / "cameras.yml"
    cameras.write_text(CAMERAS)
    try:
        worker = procs.rtai("worker", "--detector", "noop", "--preload", "")
        daemon = procs.rtai("producer", "--streams-file", str(cameras))
        wait_for(lambda: _published(r, "camf") >= 4, timeout=60, what="results before the restart")

        server.kill()
        server.stop()
        server = PrivateRedis(port=server.port)  # the same address, empty: persistence is off
        t_up = time.monotonic()
        wait_for(lambda: r.sismember(keys.DESIRED, "camf"), timeout=10, what="camf declared again")
        redeclared_s = time.monotonic() - t_up
        wait_for(lambda: _published(r, "camf") >= 4, timeout=60, what="results after the restart")
        print(f"\ncamera list declared again {redeclared_s:.2f} s after Redis came back empty")
        assert redeclared_s < 5.0
        assert worker.poll() is None and daemon.poll() is None, "neither process crashed"
        assert procs.output(daemon).count(REDECLARED) == 1, procs.output(daemon)

        # Removed on purpose while Redis stays up: the daemon stops it and does not declare it again.
        rm = procs.rtai("stream", "rm", "camf")
        assert procs.finish(rm) == 0, procs.output(rm)
        wait_for(lambda: not r.exists(keys.claim("camf")), timeout=15, what="the daemon to stop camf")
        deadline = time.monotonic() + 2.0  # eight daemon ticks
        while time.monotonic() < deadline:
            assert not r.sismember(keys.DESIRED, "camf"), "a stream removed on purpose was declared again"
            time.sleep(0.05)
        assert not r.exists(keys.claim("camf"))
        assert procs.output(daemon).count(REDECLARED) == 1
        daemon.terminate()
        assert procs.finish(daemon, timeout=30) == 0, procs.output(daemon)
    finally:
        procs.close()
        server.stop()


def _compose_redis_args(data_dir) -> tuple[str, ...]:
    """docker-compose.yml's redis-server arguments, with its data directory moved to data_dir."""
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    args = list(command[1:])
    args[args.index("--dir") + 1] = str(data_dir)
    return tuple(args)


@pytest.mark.parametrize("persistence", ["compose", "off"])
def test_redis_with_compose_settings_keeps_declared_streams_across_a_crash(tmp_path, persistence):
    data = tmp_path / "data"
    data.mkdir()
    extra = _compose_redis_args(data) if persistence == "compose" else ()
    server = PrivateRedis(extra_args=extra, data_dir=data)
    procs = Procs(server.url, tmp_path)
    try:
        add = procs.rtai("stream", "add", "camp", "--source", "demo", "--loop")
        assert procs.finish(add) == 0, procs.output(add)
        r = redis.Redis.from_url(server.url)
        ledger.count(r, "camp", ledger.PRODUCED, 7)
        r.close()

        server.kill()  # SIGKILL: no shutdown save
        server = PrivateRedis(port=server.port, extra_args=extra, data_dir=data)
        r = redis.Redis.from_url(server.url)
        kept = desired.streams(r)
        if persistence == "compose":
            assert kept == ["camp"]
            assert desired.get(r, "camp")["settings"]["source"] == "demo"
            assert ledger.read(r, "camp")[ledger.PRODUCED] == 7
        else:  # what the compose file used to run: a restart forgets everything
            assert kept == []
        r.close()
    finally:
        procs.close()
        server.stop()
