"""Stopping the processes a benchmark or a test started: SIGTERM to all, then a wait for each."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def stop_all(procs: Iterable[subprocess.Popen], timeout: float = 30.0) -> None:
    """SIGTERM every process first (they stop in parallel), then wait for each; kill the ones
    still running after `timeout` seconds."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
