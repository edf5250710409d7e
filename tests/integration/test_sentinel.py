"""Redis high availability with Sentinel, on real processes: a master, two replicas and three
sentinels (`redis-server --sentinel`, what Debian's redis-sentinel runs), and a fleet (producer and
worker) given only a `redis+sentinel://` URL. The master is SIGKILLed mid-stream, once and then
twice in a row: the sentinels promote a replica, the fleet publishes again from the new master
without any process exiting, and once the producer stops every frame is accounted for."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common import keys
from common.ledger import read as read_counts

from ..helpers import free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SERVICE = "rtai"
#: How long a sentinel waits for an unanswering master before calling it down (the compose `ha`
#: profile uses the same: a second of silence on a LAN is a dead Redis, not a slow one).
DOWN_AFTER_MS = 1000


class Deployment:
    """A master, a replica and three sentinels on loopback, each its own process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        for name in ("a", "b", "c"):
            self.ports[name] = free_port()
        self._server("a")
        for name in ("b", "c"):
            self._server(name, "--replicaof", "127.0.0.1", str(self.ports["a"]))
        for i in range(3):
            self._sentinel(f"s{i}")
        self.url = (
            "redis+sentinel://" + ",".join(f"127.0.0.1:{self.ports[f's{i}']}" for i in range(3)) + f"/{SERVICE}/0"
        )

    def _server(self, name: str, *extra: str) -> None:
        port = self.ports[name]
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.procs[name] = subprocess.Popen([*cmd, "--dir", str(self.root), *extra], stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(port), timeout=10, what=f"redis {name}")

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
        wait_for(lambda: _pings(port), timeout=10, what=f"sentinel {name}")

    def master_port(self) -> int | None:
        """The master's port as the sentinels say (all of those that answer must agree)."""
        answers = set()
        for i in range(3):
            try:
                addr = redis.Redis(port=self.ports[f"s{i}"], socket_timeout=1).sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            answers.add(int(addr[1]) if addr else None)
        return answers.pop() if len(answers) == 1 else None

    def client(self) -> redis.Redis:
        port = self.master_port()
        assert port is not None
        return redis.Redis(port=port)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path)
    try:
        wait_for(lambda: deployment.master_port() == deployment.ports["a"], timeout=10, what="sentinels agreeing")
        wait_for(  # the replica is in sync and known to the sentinels
            lambda: redis.Redis(port=deployment.ports["a"]).info("replication")["connected_slaves"] == 2,
            timeout=10,
            what="the replica",
        )
        yield deployment
    finally:
        deployment.close()


def _held(client: redis.Redis) -> dict:
    return {k.decode(): client.hgetall(k) for k in client.scan_iter(keys.inflight("*"))}


def _published(client: redis.Redis, stream: str) -> int:
    return int(read_counts(client, stream)["published"])


def _replicas_in_sync(master: redis.Redis, n: int) -> bool:
    """At least `n` replicas online and at most a second behind the master."""
    info = master.info("replication")
    links = [info.get(f"slave{i}") or {} for i in range(info["connected_slaves"])]
    return sum(link.get("state") == "online" and int(link.get("lag", 99)) <= 1 for link in links) >= n


@pytest.mark.parametrize("kills", [1, 2])
def test_the_fleet_publishes_again_after_the_master_dies_and_accounts_for_every_frame(sentinel, procs, kills):
    env = {"RTAI_REDIS_URL": sentinel.url}
    worker = procs.rtai("worker", "--threads", "1", env=env, log="worker.log")
    producer = procs.rtai(
        "producer", "--source", "demo", "--stream", "ha", "--loop", "--max-fps", "10", "--batch-size", "2", env=env
    )
    before = wait_for(lambda: _published(sentinel.client(), "ha") >= 20 or None, timeout=90, what="results")
    assert before

    for done in range(kills):
        old = sentinel.master_port()
        name = next(n for n in ("a", "b", "c") if sentinel.ports[n] == old)
        # The next master must hold the stream: the replica left follows the new master first.
        wait_for(lambda n=2 - done: _replicas_in_sync(sentinel.client(), n), timeout=30, what="the replicas in sync")
        sentinel.kill(name)
        t_kill = time.monotonic()
        wait_for(lambda o=old: sentinel.master_port() not in (None, o), timeout=30, what="a replica promoted")
        t_promoted = time.monotonic()
        promoted = sentinel.client()
        base = _published(promoted, "ha")
        wait_for(lambda c=promoted, b=base: _published(c, "ha") > b + 4, timeout=30, what="results from the new master")
        t_again = time.monotonic()
        assert worker.poll() is None and producer.poll() is None, "a process exited on the failover"
        print(
            f"promotion {t_promoted - t_kill:.1f} s after the kill; publishing again {t_again - t_promoted:.1f} s later"
        )

    producer.send_signal(signal.SIGTERM)
    assert procs.finish(producer) == 0
    counts = wait_for(
        lambda: (c := read_counts(promoted, "ha"))["in_flight"] == 0 and c,
        timeout=30,
        what=f"every frame settled: {read_counts(promoted, 'ha')}, in flight {_held(promoted)}",
    )
    assert counts["published"] > before
    assert promoted.llen(keys.queue_key("ha")) == 0
    assert worker.poll() is None
