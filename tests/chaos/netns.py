"""Hosts as network namespaces on one switch, for the chaos tests that cut a host off
(tests/chaos/test_partition.py, test_sentinel_partition.py).

The private subnet 10.231.0.0/24 exists only inside the namespaces a test makes; nothing is added to
the machine's own network namespace, and every namespace is deleted at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import ROOT

SUBNET = "10.231.0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Hosts:
    """Network namespaces as hosts on one switch: `<tag>-sw` holds a bridge, each host's eth0 is
    a veth whose other end (`p-<host>`) is a port of that bridge."""

    def __init__(self, workdir: Path) -> None:
        self.tag = f"rtai{os.getpid()}{secrets.token_hex(2)}"
        self.switch = f"{self.tag}-sw"
        self.namespaces: list[str] = []
        self.addresses: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []
        self.workdir = workdir

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def build(self, hosts: list[str]) -> None:
        _ip("netns", "add", self.switch)
        self.namespaces.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts, start=1):
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.namespaces.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p-{host}", "netns", self.switch)
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.switch, "link", "set", f"p-{host}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p-{host}", "up")
            self.addresses[host] = f"{SUBNET}.{i}"

    def cut(self, host: str) -> None:
        """Pull the host's cable at the switch: its packets vanish, nobody gets an error."""
        _ip("-n", self.switch, "link", "set", f"p-{host}", "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", f"p-{host}", "up")

    def run(
        self, host: str, args: list[str], *, env: dict[str, str] | None = None, log_name: str | None = None
    ) -> subprocess.Popen:
        log = self.workdir / f"{log_name or host}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the file descriptor
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *args],
                env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _namespaces_unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed: run scripts/install_system_deps.sh"
    probe = f"rtaiprobe{os.getpid()}{secrets.token_hex(2)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="rtai-part-"))  # short: it holds Redis's Unix socket
    h = Hosts(workdir)
    try:
        yield h
    finally:
        h.close()
        if h.procs:
            print("\n".join(f"--- {Path(p.log_path).name}\n{_tail(p)}" for p in h.procs))  # type: ignore[attr-defined]
        shutil.rmtree(workdir, ignore_errors=True)


def _tail(proc: subprocess.Popen, lines: int = 15) -> str:
    return "\n".join(Path(proc.log_path).read_text(errors="replace").splitlines()[-lines:])  # type: ignore[attr-defined]
