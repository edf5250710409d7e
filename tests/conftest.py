"""Fixtures: a real redis-server and a real GStreamer RTSP server, started once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.config import ASSETS_DIR
from control.redis_server import PrivateRedis

from .helpers import ROOT, Procs, free_port

MODEL = ASSETS_DIR / "rtai-shapes.pt"
CLIP = ASSETS_DIR / "demo.mp4"
CLIP_GT = ASSETS_DIR / "demo.gt.json"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session", autouse=True)
def private_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An empty RTAI_WEIGHTS_DIR for the session (inherited by every process a test starts): the
    engine cache lives under it, so an export on this host (`rtai up` run by hand, say) never
    changes which engine a test's worker picks. Tests that need one set their own."""
    root = tmp_path_factory.mktemp("session-weights")
    before = os.environ.get("RTAI_WEIGHTS_DIR")
    os.environ["RTAI_WEIGHTS_DIR"] = str(root)
    yield root
    if before is None:
        os.environ.pop("RTAI_WEIGHTS_DIR", None)
    else:
        os.environ["RTAI_WEIGHTS_DIR"] = before


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server on a free loopback port, persistence off, for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server")
    server = PrivateRedis()
    yield server.url
    server.stop()


@pytest.fixture
def r(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def procs(redis_server: str, tmp_path: Path) -> Iterator[Procs]:
    p = Procs(redis_server, tmp_path)
    yield p
    p.close()


@pytest.fixture(scope="session")
def clip_frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo clip's frames as JPEG files, for the RTSP server to loop over."""
    from devkit.clip_frames import write_clip_frames  # noqa: PLC0415

    out = tmp_path_factory.mktemp("clipframes")
    assert write_clip_frames(out, CLIP) > 0, f"could not read {CLIP}"
    return out


def _start_rtsp(args: list[str]) -> tuple[subprocess.Popen, str]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} with python3-gi is needed for the RTSP server: run `make test`")
    port = free_port()
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(ROOT / "scripts" / "rtsp_server.py"), "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        pytest.fail(f"RTSP server did not start: {line}{proc.stdout.read()}")
    return proc, line.split()[1]


@pytest.fixture(scope="session")
def rtsp_clip(clip_frames_dir: Path) -> Iterator[str]:
    """rtsp://... serving the demo clip in a loop at 15 fps."""
    proc, url = _start_rtsp(["--frames", str(clip_frames_dir), "--fps", "15"])
    time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def rtsp_pattern() -> Iterator[str]:
    """rtsp://... serving a live test pattern."""
    proc, url = _start_rtsp(["--pattern", "--fps", "15"])
    yield url
    proc.terminate()
    proc.wait(timeout=10)
