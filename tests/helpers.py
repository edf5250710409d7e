"""Test helpers: wait with a deadline, run rtai processes, free ports."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.config import role_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll cond until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


class Procs:
    """Start `rtai` subprocesses; every one still running is killed at teardown."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.redis_url = redis_url
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []

    def rtai(self, *args: str, env: dict[str, str] | None = None, log: str | None = None) -> subprocess.Popen:
        full_env = dict(os.environ, RTAI_REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        path = self.tmp / (log or f"proc{len(self.procs)}.log")
        with path.open("wb") as out:  # the child holds its own copy of the descriptor
            proc = subprocess.Popen(
                role_command("control", *args),
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        proc.log_path = str(path)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    @staticmethod
    def output(proc: subprocess.Popen) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def finish(self, proc: subprocess.Popen, timeout: float = 60) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise AssertionError(f"process {proc.args} did not exit in {timeout} s:\n{self.output(proc)}") from exc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)


def parse_python(path: Path) -> ast.Module:
    """`ast.parse` of a file, tried again on CPython 3.11's thread race in the AST constructor
    (gh-106905: `SystemError: AST constructor recursion depth mismatch` when another thread, e.g.
    one formatting a traceback, parses at the same moment). Any other error is raised."""
    text = path.read_text()
    for attempt in range(3):
        try:
            return ast.parse(text, filename=str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")
