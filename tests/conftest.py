"""Fixtures: a real redis-server and a real GStreamer RTSP server, started once per session."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
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


# schemathesis' pytest-xdist hook imports its report writers at session finish, when a test's leftover
# thread may be running: pytest's assertion rewriter then parses them and can hit CPython 3.11's AST
# thread race (gh-106905, "AST constructor recursion depth mismatch"; once in CI). Imported here, at
# collection, they are parsed before any test starts a thread.
for _writer in ("allure", "html.writer", "junitxml"):
    with contextlib.suppress(ImportError):
        importlib.import_module(f"schemathesis.reporting.{_writer}")


#: Run alone, after the parallel phase of `make test` (Makefile): tests whose thresholds are real time
#: (rates, latencies, frames sampled on time, failover within seconds), the network-namespace hosts
#: (fixed names and addresses), and the browser. The rest runs two files at a time.
SERIAL = (
    "tests/chaos/",
    "tests/browser/",
    "tests/integration/test_motion_gating.py",
    "tests/integration/test_flow.py",
    "tests/integration/test_fresh_batches.py",
    "tests/integration/test_capture_delay.py",
    "tests/integration/test_first_results.py",
    "tests/integration/test_sentinel.py",
    "tests/integration/test_daemon_claims.py",
    "tests/integration/test_scale_out.py",
    "tests/integration/test_threads.py",
    # A file is paced at its own frame rate and the newest frame kept: a producer tick held up by
    # the parallel phase's load missed one of its 30 frames (CI, de9a9b2).
    "tests/integration/test_producer.py::test_file_source_every_frame_sampled_resized_and_counted",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = f"{Path(item.path).resolve().relative_to(ROOT).as_posix()}::{item.name}"  # a file, or one test
        if where.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)


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


class RtspServer:
    """scripts/rtsp_server.py under the system Python, its output in a file (a pipe nobody reads
    fills up and stops the server). `url()` restarts it when it has exited, then warns naming its exit
    and last output (an error under the suite's filterwarnings): one lost server fails the test that
    found it, not every later test."""

    def __init__(self, args: list[str], log: Path) -> None:
        if not Path(SYSTEM_PYTHON).exists():
            pytest.fail(f"{SYSTEM_PYTHON} with python3-gi is needed for the RTSP server: run `make test`")
        self.args, self.log = args, log
        self._start()

    def _start(self) -> None:
        port = free_port()
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(ROOT / "scripts" / "rtsp_server.py"), "--port", str(port), *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            ready = [line for line in text.splitlines() if line.startswith("READY ")]
            if ready:
                self._url = ready[0].split()[1]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"RTSP server did not start: {text[-2000:]}")
            time.sleep(0.05)

    def url(self) -> str:
        rc = self.proc.poll()
        if rc is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            self._start()  # first: the next test finds it up whatever this one does with the warning
            warnings.warn(
                f"the RTSP test server {self.args} exited ({rc}); restarted. Its last output:\n{tail}", stacklevel=2
            )
        return self._url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _start_rtsp(args: list[str], log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """A server of a test's own (stopped by the test)."""
    if log is None:
        fd, name = tempfile.mkstemp(prefix="rtsp-", suffix=".log")
        os.close(fd)
        log = Path(name)
    server = RtspServer(args, log)
    return server.proc, server.url()


@pytest.fixture(scope="session")
def _rtsp_clip_server(clip_frames_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    server = RtspServer(["--frames", str(clip_frames_dir), "--fps", "15"], tmp_path_factory.mktemp("rtsp") / "clip.log")
    time.sleep(0.2)
    yield server
    server.stop()


@pytest.fixture
def rtsp_clip(_rtsp_clip_server: RtspServer) -> str:
    """rtsp://... serving the demo clip in a loop at 15 fps (one server for the session)."""
    return _rtsp_clip_server.url()


@pytest.fixture(scope="session")
def _rtsp_pattern_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    server = RtspServer(["--pattern", "--fps", "15"], tmp_path_factory.mktemp("rtsp") / "pattern.log")
    yield server
    server.stop()


@pytest.fixture
def rtsp_pattern(_rtsp_pattern_server: RtspServer) -> str:
    """rtsp://... serving a live test pattern (one server for the session)."""
    return _rtsp_pattern_server.url()
