"""The Redis master cut off from the fleet by a network partition, with Sentinel (issue 19).

Real hosts as network namespaces on one switch (tests/chaos/test_partition.py): `ra` runs the master
and a sentinel, `rb` and `rc` a replica and a sentinel each (quorum 2), `producer` and `worker` the
fleet, given only the `redis+sentinel://` URL. The master's switch port goes down: nobody gets an
error, its packets just vanish. The two sentinels that still see each other promote a replica; the
producer's and the worker's calls to the old master, a second without a reply, ask the sentinels
whether it is still the master, drop it, and the fleet publishes from the new master within seconds
of the promotion, without any process exiting. Healed, the old master comes
back as a replica. Once the producer stops, every frame is accounted for and none was published
twice. The test reads every server through its Unix socket.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis

from common import keys, ledger
from common.wire import decode_result

from ..helpers import wait_for
from .netns import Hosts, _tail
from .test_partition import _rtai

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SERVICE = "rtai"
STREAM = "ha"
SERVERS = ("ra", "rb", "rc")


def _server(hosts: Hosts, name: str, master: str | None) -> redis.Redis:
    sock = hosts.workdir / f"{name}.sock"
    cmd = ["redis-server", "--bind", hosts.addresses[name], "--port", "6379", "--protected-mode", "no"]
    cmd += ["--unixsocket", str(sock), "--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(hosts.workdir), "--dbfilename", f"{name}.rdb"]
    if master is not None:
        cmd += ["--replicaof", hosts.addresses[master], "6379"]
    hosts.run(name, cmd)
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
    wait_for(lambda: sock.exists() and client.ping(), timeout=10, what=f"redis on {name}")
    return client


def _sentinel(hosts: Hosts, name: str) -> redis.Redis:
    sock = hosts.workdir / f"{name}-s.sock"
    conf = hosts.workdir / f"{name}-sentinel.conf"
    conf.write_text(
        f"port 26379\nbind {hosts.addresses[name]}\nprotected-mode no\n"
        f"unixsocket {sock}\nunixsocketperm 700\ndir {hosts.workdir}\n"
        f"sentinel monitor {SERVICE} {hosts.addresses['ra']} 6379 2\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )
    hosts.run(name, ["redis-server", str(conf), "--sentinel"], log_name=f"{name}-sentinel")
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
    wait_for(lambda: sock.exists() and client.ping(), timeout=10, what=f"sentinel on {name}")
    return client


def _master(sentinels: list[redis.Redis]) -> str | None:
    """The master's address as the sentinels that answer all say (None while they disagree)."""
    answers = set()
    for s in sentinels:
        try:
            addr = s.sentinel_get_master_addr_by_name(SERVICE)
        except redis.RedisError:
            continue
        host = addr[0] if addr else None
        answers.add(host.decode() if isinstance(host, bytes) else host)
    return answers.pop() if len(answers) == 1 else None


def _published(client: redis.Redis) -> int:
    try:
        return int(ledger.read(client, STREAM)["published"])
    except redis.RedisError:
        return -1


def test_the_master_cut_off_by_a_partition_is_replaced_and_the_fleet_carries_on(hosts):
    hosts.build([*SERVERS, "producer", "worker"])
    servers = {"ra": _server(hosts, "ra", None)}
    servers |= {name: _server(hosts, name, "ra") for name in SERVERS[1:]}
    sentinels = [_sentinel(hosts, name) for name in SERVERS]
    by_ip = {hosts.addresses[name]: name for name in SERVERS}
    wait_for(lambda: _master(sentinels) == hosts.addresses["ra"], timeout=15, what="the sentinels agreeing")
    wait_for(
        lambda: len(sentinels[0].sentinel_sentinels(SERVICE)) == 2, timeout=20, what="the sentinels finding each other"
    )
    url = "redis+sentinel://" + ",".join(f"{hosts.addresses[n]}:26379" for n in SERVERS) + f"/{SERVICE}/0"
    env = {"RTAI_REDIS_URL": url, "RTAI_MAX_FRAME_AGE_MS": "600000"}
    worker = hosts.run("worker", _rtai("worker", "--detector", "sleep", "--sleep-ms", "50", "--preload", ""), env=env)
    producer = hosts.run(
        "producer",
        _rtai("producer", "--source", "demo", "--loop", "--stream", STREAM, "--max-fps", "8", "--batch-size", "2"),
        env=env,
    )
    wait_for(lambda: _published(servers["ra"]) >= 20, timeout=60, what="results before the cut")

    t_cut = time.monotonic()
    hosts.cut("ra")
    promoted = wait_for(
        lambda: (m := _master(sentinels[1:])) not in (None, hosts.addresses["ra"]) and m,
        timeout=30,
        what="a replica promoted",
    )
    t_promoted = time.monotonic()
    new = servers[by_ip[promoted]]
    at_promotion = _published(new)
    wait_for(lambda: _published(new) > at_promotion, timeout=90, what="a result from the new master")
    t_flowing = time.monotonic()
    wait_for(lambda: _published(new) > at_promotion + 10, timeout=60, what="results from the new master")
    print(
        f"\nsentinel partition: promoted {t_promoted - t_cut:.1f} s after the cut, results again "
        f"{t_flowing - t_promoted:.1f} s after the promotion"
    )
    # A call waiting on the silent master asks the sentinels after a second without a reply, so it
    # does not wait out its 10 s socket timeout: that put results 11-11.7 s after the promotion, and
    # never under 6.7 s (the promotion comes at most 3.3 s after the cut). Now 1.2-4.1 s.
    assert t_flowing - t_promoted < 6, f"results again only {t_flowing - t_promoted:.1f} s after the promotion"
    hosts.heal("ra")
    wait_for(lambda: servers["ra"].info("replication")["role"] == "slave", timeout=60, what="the old master a replica")
    assert producer.poll() is None and worker.poll() is None, "no process exited"

    producer.terminate()
    assert producer.wait(timeout=30) == 0, _tail(producer)
    try:
        wait_for(lambda: ledger.read(new, STREAM)["in_flight"] == 0, timeout=60, what="the ledger to balance")
    except AssertionError as exc:  # say where the missing frames are (a rare failure in CI: 2 in flight)
        held = {k.decode(): new.hgetall(k) for k in new.scan_iter(keys.inflight("*"))}
        queued = new.lrange(keys.queue_key(STREAM), 0, -1)
        raise AssertionError(
            f"{exc}; ledger {ledger.read(new, STREAM)}; in flight {held}; queued {queued}; "
            f"worker: {_tail(worker)}; producer: {_tail(producer)}"
        ) from exc
    c = ledger.read(new, STREAM)
    assert c["failed"] == 0 and c["dropped_stale"] == 0, c
    seen = Counter(decode_result(f[b"r"]).seq for _id, f in new.xrange(keys.history(STREAM)))
    assert max(seen.values()) == 1, f"published twice: {[k for k, v in seen.items() if v > 1]}"
    assert worker.poll() is None, _tail(worker)
