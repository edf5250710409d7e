"""The containers' healthchecks (`python -m control.health ROLE`) against a real Redis and real ports."""

from __future__ import annotations

import os
import subprocess
import sys

from common import keys
from common.config import host_name

from ..helpers import ROOT, free_port


def _health(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RTAI_REDIS_URL=redis_url)
    return subprocess.run(
        [sys.executable, "-m", "control.health", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def test_redis_role_is_healthy_while_redis_answers(r, redis_server):
    assert _health(redis_server, "redis").returncode == 0
    dead = f"redis://127.0.0.1:{free_port()}/0"
    gone = _health(dead, "tracker")
    assert gone.returncode == 1 and "Redis does not answer" in gone.stderr


def test_worker_is_healthy_only_while_a_worker_of_this_host_holds_its_lease(r, redis_server):
    r.sadd(keys.WORKERS, "otherhost:gpu0:abc")
    r.set(keys.worker_alive("otherhost:gpu0:abc"), 1)
    mine = f"{host_name()}:gpu0:def"
    r.sadd(keys.WORKERS, mine)
    sick = _health(redis_server, "worker")
    assert sick.returncode == 1 and f"no worker of host {host_name()}" in sick.stderr
    r.set(keys.worker_alive(mine), 1, px=5000)
    assert _health(redis_server, "worker").returncode == 0


def test_api_role_names_a_port_nothing_answers_on(redis_server):
    port = free_port()
    down = _health(redis_server, "api", str(port))
    assert down.returncode == 1 and f"port {port} does not answer" in down.stderr
