"""Two Redis shards (common/shards.py), on real processes: two redis-servers, one worker serving
both, a producer per stream (each stream placed on its own shard by its id), `rtai subscribe` on
both streams. One shard first hangs (SIGSTOP: no reply and no refusal, as behind a partition), then
is SIGKILLed: each time the other shard's stream keeps publishing at its rate through the same
worker, no process exits, and when the shard answers again (SIGCONT; then a restart from its
append-only file) its stream resumes. Once the producers stop, every frame of both streams is
accounted for, no result was given twice, and `rtai status` shows both shards as one fleet."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from common import desired, keys
from common.config import ProducerSettings
from common.images import encode_frame
from common.ledger import read as read_counts
from common.shards import Shards
from control.redis_server import PrivateRedis

from ..helpers import wait_for
from ..integration.fleet import frames, sink
from ..integration.test_sinks import Receiver
from ..integration.test_tracking_fleet import SLOW_OK, clip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Every write reaches the append-only file before it is answered: a SIGKILL loses nothing.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")


def _placed(shards: Shards) -> tuple[str, str]:
    """A stream id on shard 0 and one on shard 1 (placement by rendezvous hashing of the id)."""
    by = {}
    for i in range(100):
        by.setdefault(shards.index_for(f"cam-{i}"), f"cam-{i}")
    return by[0], by[1]


@pytest.fixture
def two_shards(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis, Path]]:
    data = tmp_path / "shard-b"
    data.mkdir()
    a, b = PrivateRedis(), PrivateRedis(data_dir=data, extra_args=DURABLE)
    try:
        yield a, b, data
    finally:
        for server in (a, b):
            server.proc.send_signal(signal.SIGCONT)  # a test that failed while one hung
            server.stop()


def _published(client: redis.Redis, stream: str) -> int:
    try:
        return int(read_counts(client, stream)["published"])
    except redis.RedisError:
        return -1


def _received(procs, proc) -> list[dict]:
    return [json.loads(line) for line in procs.output(proc).splitlines() if line.startswith("{")]


def test_a_hung_or_killed_shard_stops_only_its_own_streams_and_every_frame_is_accounted_for(two_shards, procs):
    a, b, data = two_shards
    url = f"{a.url} {b.url}"
    shards = Shards.from_url(url)
    on_a, on_b = _placed(shards)
    env = {"RTAI_REDIS_URL": url}
    ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
    worker = procs.rtai("worker", "--threads", "1", env=env, log="worker.log")
    producers = {
        s: procs.rtai(
            "producer", "--source", "demo", "--stream", s, "--loop", "--max-fps", "8", "--batch-size", "2", env=env
        )
        for s in (on_a, on_b)
    }
    subscriber = procs.rtai("subscribe", "--json", "--wait", on_a, on_b, env=env, log="subscriber.log")
    wait_for(lambda: _published(ca, on_a) >= 16 and _published(cb, on_b) >= 16, timeout=90, what="both shards")
    # Each stream's keys are on its own shard only.
    assert not ca.exists(f"rtai:ledger:{on_b}") and not cb.exists(f"rtai:ledger:{on_a}")

    t0, before = time.monotonic(), _published(ca, on_a)
    time.sleep(3)
    rate_before = (_published(ca, on_a) - before) / (time.monotonic() - t0)

    # Shard 1 hangs: the worker's lanes give up on it within 2 s (common/shards.GIVE_UP_S) and set it
    # aside. With the usual 10 s and retries, a hung shard held the other shard's stream for as long as
    # it hung. `rtai status` gives up on it as soon and shows it down.
    b.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)
        t0, before = time.monotonic(), _published(ca, on_a)
        time.sleep(4)
        rate_hung = (_published(ca, on_a) - before) / (time.monotonic() - t0)
        t_status = time.monotonic()
        st = procs.rtai("status", "--json", env=env, log="status-hung.log")
        assert procs.finish(st) == 0, procs.output(st)
        t_status = time.monotonic() - t_status
    finally:
        b.proc.send_signal(signal.SIGCONT)
    print(f"{on_a}: {rate_before:.1f} results/s before, {rate_hung:.1f} while shard 1 hung")
    assert rate_hung >= 0.7 * rate_before, (rate_before, rate_hung, procs.output(worker)[-3000:])
    hung = json.loads(procs.output(st))
    assert [s["up"] for s in hung["shards"]] == [True, False], hung["shards"]
    assert hung["streams"][on_a]["state"] == "running", hung["streams"]  # on_b is listed on its shard only
    assert t_status < 10, f"rtai status took {t_status:.1f} s beside a hung shard"
    resumed = _published(cb, on_b)
    wait_for(lambda: _published(cb, on_b) > resumed + 4, timeout=30, what="the hung shard's stream again")
    assert all(p.poll() is None for p in (worker, subscriber, *producers.values())), "a process exited"

    b.kill()
    time.sleep(1)  # the worker notices on its next poll of the dead shard
    t0, before = time.monotonic(), _published(ca, on_a)
    time.sleep(5)
    rate_during = (_published(ca, on_a) - before) / (time.monotonic() - t0)
    heard_a = [m for m in _received(procs, subscriber) if m["stream"] == on_a]
    print(f"{on_a}: {rate_before:.1f} results/s before the kill of shard 1, {rate_during:.1f} while it was down")
    assert rate_during >= 0.7 * rate_before, (rate_before, rate_during, procs.output(worker)[-3000:])
    assert all(p.poll() is None for p in (worker, subscriber, *producers.values())), "a process exited"

    b2 = PrivateRedis(port=b.port, data_dir=data, extra_args=DURABLE)
    try:
        cb = redis.Redis.from_url(b2.url)
        resumed = _published(cb, on_b)
        wait_for(lambda: _published(cb, on_b) > resumed + 8, timeout=60, what="the killed shard's stream again")
        assert len([m for m in _received(procs, subscriber) if m["stream"] == on_a]) > len(heard_a)

        for p in producers.values():
            p.send_signal(signal.SIGTERM)
        assert all(procs.finish(p) == 0 for p in producers.values())
        counts = {
            s: wait_for(lambda c=c, s=s: (n := read_counts(c, s))["in_flight"] == 0 and n, timeout=60, what="balanced")
            for s, c in ((on_a, ca), (on_b, cb))
        }
        for s, n in counts.items():
            print(s, n)
            assert n["published"] > 0 and n["failed"] == 0, n
        assert counts[on_b]["dropped_unreachable"] > 0, "the producer on the killed shard counted what it lost"

        time.sleep(1)  # the subscriber prints what was published last
        for s in (on_a, on_b):
            seqs = [m["seq"] for m in _received(procs, subscriber) if m["stream"] == s]
            assert len(seqs) == len(set(seqs)), f"{s}: a result was given twice"
        assert worker.poll() is None

        st = procs.rtai("status", "--json", env=env, log="status.log")
        assert procs.finish(st) == 0
        report = json.loads(procs.output(st))
        assert {s["shard"] for s in report["streams"].values()} == {0, 1}
        assert report["streams"][on_b]["shard"] == 1 and report["streams"][on_a]["shard"] == 0
        assert [s["up"] for s in report["shards"]] == [True, True]
        (w,) = [w for w in report["workers"].values() if w["alive"]]
        published = sum(counts[s]["published"] for s in counts)
        assert w["frames"] >= published - 2, (w, published)  # one worker did both shards' frames
    finally:
        b2.stop()


@pytest.mark.timeout(90)
def test_a_dead_workers_job_on_a_second_shard_is_requeued_by_that_shards_lease_reaper(two_shards, procs):
    """Failover by lease works per shard: a worker SIGKILLs itself mid-inference holding a job of a
    stream on shard 1 (no supervisor to requeue it); another worker's reaper on that shard finds its
    lease there run out and requeues the job, which is published once."""
    a, b, _data = two_shards
    url = f"{a.url} {b.url}"
    _on_a, on_b = _placed(Shards.from_url(url))
    cb = redis.Redis.from_url(b.url)
    env = {"RTAI_REDIS_URL": url}
    noop = ("--detector", "sleep", "--sleep-ms", "20", "--preload", "")
    victim = procs.rtai("worker", *noop, "--name", "victim", "--fault-point", "during_inference", env=env)
    wait_for(lambda: cb.exists(keys.worker_alive("victim")), timeout=30, what="the victim on shard 1")
    s = sink(cb, on_b, batch_size=1)
    assert s.push(frames(1))
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert cb.hlen(keys.inflight("victim")) == 1, "the victim died holding the job on shard 1"
    assert read_counts(cb, on_b)["published"] == 0
    other = procs.rtai("worker", *noop, "--name", "other", env=env, log="other.log")
    wait_for(lambda: read_counts(cb, on_b)["published"] == 1, timeout=30, what="the job requeued and run")
    assert cb.hlen(keys.inflight("victim")) == 0 and read_counts(cb, on_b)["in_flight"] == 0
    assert "lease of victim ran out" in procs.output(other)


def test_a_shard_whose_stream_starts_while_another_keeps_the_worker_busy_is_served(two_shards, procs):
    """Fairness across shards: a worker (100 ms a batch, so 20 frames/s) kept busy by a 30 fps
    stream on one shard; a 5 fps stream then starts on the other. Its shard's queue was empty when
    the worker last looked at it, and a lane only looked again when tried, so it sorted last for
    ever, its producer's credits lapsed and it published nothing (0 in 24 s). Now each lane looks
    once a second, tried or not, and the next group is prefetched from the lane that goes first."""
    a, b, _data = two_shards
    url = f"{a.url} {b.url}"
    busy, late = _placed(Shards.from_url(url))
    ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
    env = {"RTAI_REDIS_URL": url}
    procs.rtai("worker", "--threads", "1", "--detector", "sleep", "--sleep-ms", "100", "--preload", "", env=env)
    feed = ("--source", "demo", "--loop", "--batch-size", "2")
    procs.rtai("producer", *feed, "--stream", busy, "--max-fps", "30", env=env)
    wait_for(lambda: _published(ca, busy) >= 40, timeout=60, what=f"{busy} keeping the worker busy")
    procs.rtai("producer", *feed, "--stream", late, "--max-fps", "5", env=env)
    wait_for(lambda: _published(cb, late) >= 1, timeout=30, what=f"{late} started")
    t0, base, busy_base = time.monotonic(), _published(cb, late), _published(ca, busy)
    time.sleep(8)
    rate = (_published(cb, late) - base) / (time.monotonic() - t0)
    assert rate >= 3.0, f"{late} (5 fps) published {rate:.1f} frames/s beside the busy shard"
    assert _published(ca, busy) - busy_base >= 8 * 3, "the busy shard's stream stopped"


def _events(client: redis.Redis) -> list[dict]:
    return [json.loads(f[b"e"]) for _id, f in client.xrange(keys.EVENT_LOG)]


def _tracked(client: redis.Redis, stream: str) -> int:
    return int(client.hget(keys.track_stats(stream), "tracked") or 0)


@pytest.mark.timeout(150)
def test_tracker_and_sink_serve_every_shard_and_a_dead_home_shard_stops_only_its_own_tracking(two_shards, procs):
    """`rtai tracker` and `rtai sink webhook` on a sharded URL: each stream is tracked on its own shard
    (tracks, cursor and events in one transaction there), each shard's event log holds its streams'
    events, the one sink delivers both logs, and GET /events merges them. With the home shard (shard 0,
    the desired state) SIGKILLed, the stream on shard 1 is still tracked and its events still
    delivered; no process exits."""
    a, b, _data = two_shards
    url = f"{a.url} {b.url}"
    shards = Shards.from_url(url)
    on_a, on_b = _placed(shards)
    ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)
    env = {"RTAI_REDIS_URL": url}
    Receiver.got, Receiver.fail_first = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/hook"
    settings = dict(batch_size=2, model="rtai-shapes", imgsz=320, queue_bound=10_000, analytics={"track": {}})
    for s in (on_a, on_b):
        desired.put(shards.home, ProducerSettings(stream=s, source="demo", **settings), data=shards.for_stream(s))
    images = clip(30)
    batches = {s: sink(shards.for_stream(s), s, **settings) for s in (on_a, on_b)}

    def push(stream: str, imgs: list) -> None:
        for i in range(0, len(imgs), 2):
            chunk = imgs[i : i + 2]
            assert batches[stream].push([encode_frame(img, seq=0, t_capture=time.time(), imgsz=320) for img in chunk])

    tracker = procs.rtai("tracker", env=env, log="tracker.log")
    hook_sink = procs.rtai("sink", "webhook", hook, "--secret", "s3cret", "--rate", "500", "--from-start", env=env)
    worker = procs.rtai("worker", "--threads", "1", env={**env, **SLOW_OK}, log="worker.log")
    for s in (on_a, on_b):
        push(s, images[:30])
    wait_for(lambda: _tracked(ca, on_a) == 30 and _tracked(cb, on_b) == 30, timeout=90, what="both streams tracked")
    # Each shard's event log holds its own streams' events, and the one sink delivered both.
    logged = {s: _events(c) for s, c in ((on_a, ca), (on_b, cb))}
    assert logged[on_a] and logged[on_b]
    assert {e["stream"] for e in logged[on_a]} == {on_a} and {e["stream"] for e in logged[on_b]} == {on_b}
    # Both shards' events name their classes: the worker stores the preloaded model's names on each.
    classes = {s: {e["class"] for e in evs if "class" in e} for s, evs in logged.items()}
    assert classes[on_a] and classes[on_b] and all(isinstance(c, str) for cs in classes.values() for c in cs), classes
    ids = {e["id"] for evs in logged.values() for e in evs}
    wait_for(lambda: ids <= set(Receiver.got), timeout=30, what="both shards' events at the webhook")
    from control.api.app import create_app  # noqa: PLC0415

    api = TestClient(create_app(url))
    got = api.get("/api/v1/realtime-ai/events", params={"limit": 1000}).json()
    assert {e["stream"] for e in got} == {on_a, on_b} and {e["id"] for e in got} == ids
    assert {e["stream"] for e in api.get("/api/v1/realtime-ai/events", params={"stream": on_b}).json()} == {on_b}
    metrics = api.get("/metrics").text  # each stream's tracking counters, read from its shard
    for s in (on_a, on_b):
        assert f'rtai_tracking_frames_total{{outcome="tracked",stream="{s}"}} 30.0' in metrics, s
        assert f'rtai_events_total{{stream="{s}",type="appeared"}}' in metrics, s
    replay = procs.rtai("events", on_b, "--replay", "2", "--count", "2", env=env, log="events.log")
    assert procs.finish(replay) == 0
    assert [json.loads(line)["stream"] for line in procs.output(replay).splitlines() if line.startswith("{")] == [
        on_b,
        on_b,
    ]

    # The home shard hangs (SIGSTOP): the other shard's stream is tracked on within seconds (a claim
    # tick gives up on the home shard's desired state after 0.5 s), then the home shard is killed.
    a.proc.send_signal(signal.SIGSTOP)
    t_hung = time.monotonic()
    push(on_b, images[:30])  # the scene jumps back to the clip's start: tracks are lost and new ones appear
    wait_for(lambda: _tracked(cb, on_b) == 60, timeout=60, what=f"{on_b} tracked with the home shard hung")
    hung_s = time.monotonic() - t_hung
    print(f"\n{on_b}: 30 frames tracked {hung_s:.1f} s after the home shard hung")
    assert hung_s < 20, f"{hung_s:.1f} s: the tracker waited on the hung home shard"  # 40 s with 10 s x 4 tries
    a.proc.send_signal(signal.SIGCONT)
    a.kill()  # the home shard: desired state, claims and shard 0's streams
    push(on_b, images[:30])
    wait_for(lambda: _tracked(cb, on_b) == 90, timeout=60, what=f"{on_b} tracked with the home shard down")
    wait_for(lambda: len(_events(cb)) > len(logged[on_b]), timeout=30, what=f"new events of {on_b}")
    after = {e["id"] for e in _events(cb)}
    wait_for(lambda: after <= set(Receiver.got), timeout=30, what=f"{on_b}'s new events at the webhook")
    down = api.get("/api/v1/realtime-ai/events", params={"limit": 1000})
    assert down.status_code == 200 and down.headers["X-RTAI-Shards-Unreachable"] == "1"
    assert {e["id"] for e in down.json()} == after
    assert all(p.poll() is None for p in (tracker, hook_sink, worker)), "a process exited"
    assert "desired state unreadable, keeping 1 stream(s)" in procs.output(tracker)
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(120)
def test_services_started_through_the_rest_api_run_on_their_own_shards(two_shards, procs, monkeypatch):
    """The REST API on a sharded URL, with a producer daemon and a worker on the same URL: a service
    started on each shard runs there, and `/status` and `/services` report both. With the other
    shard dead, /metrics, `rtai stream ls` and a new daemon serve the home shard's stream, and
    `/stop` stops it."""
    from control.api.app import create_app  # noqa: PLC0415

    a, b, _data = two_shards
    url = f"{a.url} {b.url}"
    on_a, on_b = _placed(Shards.from_url(url))
    clients = {on_a: redis.Redis.from_url(a.url), on_b: redis.Redis.from_url(b.url)}
    env = {"RTAI_REDIS_URL": url}
    procs.rtai("producer", env=env, log="daemon.log")
    procs.rtai("worker", "--detector", "noop", "--preload", "", env=env, log="worker.log")
    monkeypatch.setenv("RTAI_API_ALLOW_PRIVATE", "all")
    api = TestClient(create_app(url))
    p = "/api/v1/realtime-ai"
    for s in (on_a, on_b):
        body = {
            "stream_config": {"url": "demo", "protocol": "file", "loop": True, "stream_id": s},
            "model_settings": {"variant": "rtai-shapes"},
            "processing_settings": {"max_fps": 10, "batch_size": 2},
        }
        resp = api.post(f"{p}/start", json=body)
        assert resp.status_code == 200 and resp.json()["service_id"] == s, resp.text
    for s in (on_a, on_b):
        wait_for(lambda s=s: api.get(f"{p}/status/{s}").json()["ledger"]["published"] >= 10, timeout=60, what=s)
        assert read_counts(clients[s], s)["published"] >= 10, "published on the stream's own shard"
        assert api.get(f"{p}/status/{s}").json()["state"] == "running"
    assert {x["service_id"] for x in api.get(f"{p}/services").json()["services"]} == {on_a, on_b}
    assert not clients[on_a].exists(keys.ledger(on_b)) and not clients[on_b].exists(keys.ledger(on_a))

    # The other shard (not the home shard) dies. /metrics still serves the live shard's stream, the
    # dead one's stream only by its state (counters left out, not 0: a drop reads as a reset), and no
    # count summed over the shards. `rtai stream ls` answers, and a producer daemon starts (both
    # exited 3 while any shard was down).
    b.kill()
    metrics = api.get("/metrics")
    assert metrics.status_code == 200, metrics.text  # 503 for the whole fleet before
    samples = [line for line in metrics.text.splitlines() if not line.startswith("#")]
    assert any(line.startswith(f'rtai_frames_total{{outcome="published",stream="{on_a}"}}') for line in samples)
    assert [line for line in samples if f'stream="{on_b}"' in line] == [
        f'rtai_stream_state{{state="unknown",stream="{on_b}"}} 1.0'
    ]
    assert not [line for line in samples if line.startswith(("rtai_worker_frames_total", "rtai_rejected_jobs"))]
    # /services lists both, the dead shard's as `unknown` (503 for the whole fleet before); a service
    # placed on the dead shard is refused with 503 saying so, and declares nothing (a 500 before,
    # leaving it half-declared); the live view's snapshot with a page on the dead shard's stream
    # still shows the fleet (every page showed only an error before).
    listed = {x["service_id"]: x["state"] for x in api.get(f"{p}/services").json()["services"]}
    assert listed == {on_a: "running", on_b: "unknown"}, listed
    away = next(s for s in (f"cam-{i}" for i in range(100, 200)) if Shards.from_url(url).index_for(s) == 1)
    refused = api.post(f"{p}/start", json={**body, "stream_config": {**body["stream_config"], "stream_id": away}})
    assert refused.status_code == 503 and "not declared: its Redis shard does not answer" in refused.text, refused.text
    assert away not in desired.streams(clients[on_a])
    from control.api.livefeed import LiveFeed  # noqa: PLC0415

    snapshot = LiveFeed(url, Shards.from_url(url, give_up_s=2.0)).snapshot({on_b})
    assert snapshot["streams"][on_a]["state"] == "running" and snapshot["streams"][on_b]["state"] == "unknown"
    ls = procs.rtai("stream", "ls", env=env)
    assert procs.finish(ls) == 0 and on_a in procs.output(ls), procs.output(ls)
    second = procs.rtai("producer", env=env, log="daemon2.log")
    time.sleep(7)  # it exited 3 after 5 s, waiting for the dead shard
    assert second.poll() is None, procs.output(second)
    assert api.post(f"{p}/stop/{on_a}").status_code == 200
    wait_for(lambda: api.get(f"{p}/status/{on_a}").json()["state"] == "stopped", timeout=20, what=f"{on_a} stopped")
    wait_for(lambda: read_counts(clients[on_a], on_a)["in_flight"] == 0, timeout=30, what=f"{on_a} drained")


def _split(a: PrivateRedis, b: PrivateRedis, first: str, second: str) -> str:
    """A URL naming both servers where `first` lives on the home shard and `second` on the other
    (placement hashes each shard's host, port and db: the dbs are picked for it; each pair splits
    them with odds 1 in 4, so 256 pairs all fail with odds of 1e-32)."""
    for db_a in range(16):
        for db_b in range(16):
            url = f"{a.url.rsplit('/', 1)[0]}/{db_a} {b.url.rsplit('/', 1)[0]}/{db_b}"
            shards = Shards.from_url(url)
            if (shards.index_for(first), shards.index_for(second)) == (0, 1):
                return url
    raise AssertionError(f"no dbs of {a.url} and {b.url} split {first} and {second}")


@pytest.mark.timeout(150)
def test_rtai_up_against_an_external_sharded_redis_runs_a_camera_on_each_shard(two_shards, procs, tmp_path):
    """`rtai up` given two external Redis servers: its two cameras run on their own shards through
    its one worker, its status lines and final report read both shards, and once it stops every
    frame of both streams is accounted for, on the shard that holds it."""
    a, b, _data = two_shards
    url = _split(a, b, "cam1", "cam2")
    shards = Shards.from_url(url)
    up = procs.rtai(
        *("up", "--no-export", "--threads", "1", "--duration", "14", "--source", "demo", "--source", "demo"),
        *("--max-fps", "5", "--batch-size", "2"),
        env={"RTAI_REDIS_URL": url, "XDG_RUNTIME_DIR": str(tmp_path)},
        log="up.log",
    )
    assert up.wait(timeout=120) == 0, procs.output(up)[-3000:]
    out = procs.output(up)
    for i, s in enumerate(("cam1", "cam2")):
        counts = read_counts(shards.for_stream(s), s)
        assert counts["published"] > 0 and counts["in_flight"] == 0, (s, counts)
        assert not shards.client(1 - i).exists(keys.ledger(s)), f"{s} wrote to the other shard"
        assert f"[{s}] running" in out, f"up's status lines never showed {s} running"
        (row,) = [line.split() for line in out.splitlines() if line.split()[:2] == [s, "stopped"]]
        assert (int(row[2]), int(row[3]), int(row[6])) == (counts["produced"], counts["published"], 0), row
    shard_rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])]
    # The final report's shard table: each shard up, holding one stream.
    got = [(row[0], row[-2], row[-1]) for row in shard_rows[-2:]]
    assert got == [("0", "1", "yes"), ("1", "1", "yes")], out[-1500:]


@pytest.mark.timeout(60)
def test_the_live_view_shows_every_shards_streams_and_a_dead_shard_stops_only_its_own(two_shards, caplog):
    """The API's live feed on a sharded URL (one pub/sub listener per shard): a frame published on
    each shard reaches the overview page and its own stream's page. Once shard 1 is SIGKILLed, its
    listener says so and retries, while the stream on shard 0 still reaches the page."""
    import asyncio  # noqa: PLC0415

    from control.api.livefeed import LiveFeed  # noqa: PLC0415

    from ..integration.test_livefeed_guard import WAIT_S, _good_frame_arrives, _next, _until  # noqa: PLC0415

    a, b, _data = two_shards
    url = f"{a.url} {b.url}"
    shards = Shards.from_url(url)
    on_a, on_b = _placed(shards)
    ca, cb = redis.Redis.from_url(a.url), redis.Redis.from_url(b.url)

    async def scenario() -> tuple[list[dict], dict[str, int]]:
        feed = LiveFeed(url, shards)
        overview, page_b = feed.open(None), feed.open(on_b)
        try:
            await _next(overview, "fleet", until=time.monotonic() + WAIT_S)
            got = [
                await _good_frame_arrives(ca, overview, on_a, 10),
                await _good_frame_arrives(cb, overview, on_b, 20),
                await _next(page_b, "frame", until=time.monotonic() + WAIT_S, cond=lambda d: d["stream"] == on_b),
            ]
            b.kill()
            await _until(lambda: "subscription lost" in caplog.text, "the dead shard's listener saying so")
            got.append(await _good_frame_arrives(ca, overview, on_a, 100))
            return got, dict(feed.restarts)
        finally:
            await feed.stop()

    got, restarts = asyncio.run(scenario())
    assert [(d["stream"], d["seq"] >= seq) for d, seq in zip(got, (10, 20, 20, 100), strict=True)] == [
        (on_a, True),
        (on_b, True),
        (on_b, True),
        (on_a, True),
    ]
    assert restarts == {}, "no feed task died: the dead shard's listener retries in place"
