"""A Redis Sentinel deployment on loopback for tests and benchmarks: a master, replicas and three
sentinels, each its own real process (`redis-server`, and `redis-server --sentinel`, which is what
Debian's redis-sentinel runs)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

SERVICE = "rtai"
#: How long a sentinel waits for an unanswering master before calling it down: a second of silence
#: on loopback is a dead Redis, not a slow one (the compose `ha` profile, across hosts, waits 2 s).
DOWN_AFTER_MS = 1000
SERVERS = ("a", "b", "c")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


class Deployment:
    """`replicas` replicas of server `a`, three sentinels with quorum 2; `url` is the fleet's URL."""

    def __init__(self, root: Path, replicas: int = 2) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.servers = SERVERS[: replicas + 1]
        self.ports = {name: free_port() for name in self.servers}
        self.start_server("a")
        for name in self.servers[1:]:
            self.start_server(name, replica_of=self.ports["a"])
        for i in range(3):
            self._sentinel(f"s{i}")
        hosts = ",".join(f"127.0.0.1:{self.ports[f's{i}']}" for i in range(3))
        self.url = f"redis+sentinel://{hosts}/{SERVICE}/0"
        wait_until(lambda: self.master_port() == self.ports["a"], timeout=10, what="the sentinels agreeing")
        wait_until(lambda: self.in_sync(replicas), timeout=10, what="the replicas in sync")

    def start_server(self, name: str, *, replica_of: int | None = None) -> None:
        port = self.ports[name]
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        # A full resync starts at once: Redis' default waits 5 s for more replicas to share the transfer,
        # which the deployment paid at every start and after every promotion.
        cmd += ["--repl-diskless-sync-delay", "0"]
        cmd += ["--dir", str(self.root)]
        if replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        wait_until(lambda: pings(port), timeout=10, what=f"redis {name}")

    def _sentinel(self, name: str) -> None:
        port = self.ports[name] = free_port()
        conf = self.root / f"{name}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.ports['a']} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.procs[name] = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        wait_until(lambda: pings(port), timeout=10, what=f"sentinel {name}")

    def master_port(self) -> int | None:
        """The master's port as the sentinels that answer all say; None while they disagree."""
        answers = set()
        for i in range(3):
            try:
                addr = redis.Redis(port=self.ports[f"s{i}"], socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            answers.add(int(addr[1]) if addr else None)
        return answers.pop() if len(answers) == 1 else None

    def master_name(self) -> str:
        port = self.master_port()
        return next(name for name in self.servers if self.ports[name] == port)

    def client(self) -> redis.Redis:
        port = self.master_port()
        assert port is not None, "the sentinels do not agree on a master"
        return redis.Redis(port=port)

    def in_sync(self, n: int) -> bool:
        """At least `n` replicas online and at most a second behind the master."""
        try:
            info = self.client().info("replication")
        except (redis.RedisError, AssertionError):
            return False
        links = [info.get(f"slave{i}") or {} for i in range(info["connected_slaves"])]
        return sum(link.get("state") == "online" and int(link.get("lag", 99)) <= 1 for link in links) >= n

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
