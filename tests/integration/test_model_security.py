"""Issue 8, items 1 and 9, with real processes: a crafted .pt never runs, whether it is named through
the API, a forged batch or desired state in Redis, or a file in RTAI_WEIGHTS_DIR; a model that cannot
load puts its stream in `error` at once, its frames are counted failed, and the worker goes on."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack
import pytest
from fastapi.testclient import TestClient
from rq import Queue
from rq.registry import FailedJobRegistry

from common import keys
from common.config import ultralytics_weights_dir
from common.wire import MsgpackSerializer, packb
from worker.broker.policies import MODEL_FAILURE_TTL_S

from ..checkpoints import evil_checkpoint, full_pickle_checkpoint
from ..helpers import wait_for
from .fleet import counts, frames, sink

P = "/api/v1/realtime-ai"
BODY = {"stream_config": {"url": "rtsp://cam.example:554/s", "protocol": "rtsp"}}


def _state(r, stream: str) -> tuple[str, str]:
    state, reason = r.hmget(keys.stream(stream), "state", "reason")
    return (state or b"").decode(), (reason or b"").decode()


def _alive(r) -> list[str]:
    return [w.decode() for w in r.smembers(keys.WORKERS) if r.exists(keys.worker_alive(w.decode()))]


def _failed_jobs(r, stream: str) -> list[str]:
    q = Queue(keys.queue_name(stream), connection=r, serializer=MsgpackSerializer)
    return FailedJobRegistry(queue=q, serializer=MsgpackSerializer).get_job_ids()


@pytest.fixture
def wdir(tmp_path: Path, monkeypatch) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(d))
    # The camera's host is made up: this test is about models, not the API's source rules.
    monkeypatch.setenv("RTAI_API_ALLOW_PRIVATE", "all")
    return d


@pytest.fixture
def api(r, redis_server, wdir):
    from control.api.app import create_app  # noqa: PLC0415

    return TestClient(create_app(redis_server))


def _start(api, variant: str, stream_id: str = "cam1"):
    body = {**BODY, "stream_config": {**BODY["stream_config"], "stream_id": stream_id}}
    return api.post(f"{P}/start", json={**body, "model_settings": {"variant": variant}})


def test_api_accepts_model_names_only_and_lists_them(api, r, wdir, tmp_path):
    marker = tmp_path / "pwned"
    evil_checkpoint(wdir / "evil.pt", marker)
    (wdir / "readme.txt").write_text("not a model")
    for path in (str(wdir / "evil.pt"), "../weights/evil.pt", "weights/evil.pt", "evil.pt/.", "~/evil.pt"):
        resp = _start(api, path)
        assert resp.status_code == 422, (path, resp.text)
        assert "variant" in str(resp.json()["detail"])
    resp = _start(api, "unlisted.pt")
    assert resp.status_code == 422 and "not in RTAI_WEIGHTS_DIR" in resp.text
    assert r.scard(keys.DESIRED) == 0
    for name in ("rtai-shapes", "multi_gpu_yolov11s", "yolo11n.yaml", "evil.pt"):
        assert _start(api, name, stream_id=f"s-{name.replace('.', '-')}").status_code == 200, name
    listed = api.get(f"{P}/models").json()
    by_name = {m["name"]: m for m in listed["models"]}
    assert listed["weights_dir_set"] is True
    assert by_name["rtai-shapes"] == {"name": "rtai-shapes", "kind": "bundled", "present": True}
    assert by_name["evil.pt"]["kind"] == "weights_dir"
    assert {f"yolo11{s}" for s in "nsmlx"} <= set(by_name)
    assert "readme.txt" not in by_name and str(wdir) not in str(listed)  # names, never host paths
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_forged_model_in_redis_never_runs_and_fails_its_stream(r, procs, wdir, tmp_path):
    marker = tmp_path / "pwned"
    evil_checkpoint(tmp_path / "evil.pt", marker)  # a path a forged payload names
    evil_checkpoint(wdir / "evil.pt", marker)  # the same file under an allowed name

    # Desired state naming a path (written straight to Redis): the producer daemon refuses it.
    settings = {"stream": "cam-desired", "source": "demo", "model": str(tmp_path / "evil.pt")}
    r.set(keys.desired("cam-desired"), packb({"settings": settings}))
    r.sadd(keys.DESIRED, "cam-desired")
    daemon = procs.rtai("producer", log="daemon.log")
    wait_for(lambda: _state(r, "cam-desired")[0] == "error", timeout=30, what="the daemon to refuse the stream")
    assert "not a model name" in _state(r, "cam-desired")[1]
    daemon.terminate()
    procs.finish(daemon, timeout=30)

    # A batch whose payload names a path, and one naming the evil file in RTAI_WEIGHTS_DIR.
    forged = sink(r, "cam-path")
    forged.push(frames(4))
    blob = msgpack.unpackb(r.get(keys.batch_blob("cam-path", 1)))
    blob["model"] = str(tmp_path / "evil.pt")
    r.set(keys.batch_blob("cam-path", 1), packb(blob))
    named = sink(r, "cam-named", model="evil.pt")
    named.push(frames(3))
    named.push(frames(3))

    worker = procs.rtai("worker", "--preload", "", env={"RTAI_WEIGHTS_DIR": str(wdir)}, log="worker.log")
    wait_for(lambda: counts(r, "cam-path")["failed"] == 4, timeout=90, what="the forged batch to fail")
    wait_for(lambda: counts(r, "cam-named")["failed"] == 6, timeout=30, what="both evil batches to fail")
    assert not marker.exists(), "the crafted pickle ran"
    state, reason = _state(r, "cam-path")
    assert state == "error" and "is not a model name" in reason, reason
    state, reason = _state(r, "cam-named")
    assert state == "error" and "imports posix.system, which safe loading does not allow" in reason, reason
    for stream in ("cam-path", "cam-named"):
        c = counts(r, stream)
        assert (c["published"], c["in_flight"]) == (0, 0), c
    # Frames counted failed on the first try (no retries), each failed record kept minutes, not a day.
    ids = _failed_jobs(r, "cam-named")
    assert len(ids) == 2
    assert all(0 < r.ttl(f"rq:job:{i}") <= MODEL_FAILURE_TTL_S for i in ids)
    assert not r.exists(keys.attempts("cam-named")) or not r.hgetall(keys.attempts("cam-named"))
    # The evil file was tried once, then its failure served from the cache for the second batch.
    assert procs.output(worker).count("model evil.pt failed to load") == 1, procs.output(worker)

    good = sink(r, "cam-good")
    good.push(frames(4))
    wait_for(lambda: counts(r, "cam-good")["published"] == 4, timeout=90, what="a good stream afterwards")
    assert worker.poll() is None, "the worker stays up"
    assert not marker.exists()
    worker.terminate()
    assert procs.finish(worker, timeout=30) == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_full_pickle_in_weights_dir_loads_only_when_the_operator_trusts_it(r, procs, wdir):
    full_pickle_checkpoint(wdir / "full.pt")
    s = sink(r, "cam-full", model="full.pt")
    s.push(frames(2))
    env = {"RTAI_WEIGHTS_DIR": str(wdir)}
    untrusted = procs.rtai("worker", "--burst", "--preload", "", env=env)
    assert procs.finish(untrusted, timeout=120) == 0, procs.output(untrusted)
    assert counts(r, "cam-full")["failed"] == 2
    state, reason = _state(r, "cam-full")
    assert state == "error" and "datetime.date" in reason and "RTAI_TRUST_WEIGHTS_DIR=1" in reason, reason

    s.push(frames(2))
    trusted = procs.rtai("worker", "--burst", "--preload", "", env={**env, "RTAI_TRUST_WEIGHTS_DIR": "1"})
    assert procs.finish(trusted, timeout=120) == 0, procs.output(trusted)
    c = counts(r, "cam-full")
    assert (c["published"], c["failed"], c["in_flight"]) == (2, 2, 0), c
    assert _state(r, "cam-full") == ("running", ""), "the stream recovers once its model loads"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_missing_stock_model_fails_its_stream_within_seconds_without_network(r, procs, api, wdir):
    cache = ultralytics_weights_dir()
    if cache is not None and (cache / "yolo11x.pt").exists():
        pytest.skip(f"yolo11x.pt is in Ultralytics' cache {cache}: nothing is missing on this host")
    assert _start(api, "yolo11x", stream_id="cam-stock").status_code == 200
    # Any download would go through this proxy, which refuses connections at once.
    env = {"RTAI_WEIGHTS_DIR": str(wdir), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    worker = procs.rtai("worker", "--preload", "rtai-shapes", env=env, log="worker.log")
    wait_for(lambda: _alive(r), timeout=90, what="the worker to start")
    s = sink(r, "cam-stock", model="yolo11x")
    t0 = time.monotonic()
    s.push(frames(2))
    s.push(frames(2))
    wait_for(lambda: counts(r, "cam-stock")["failed"] == 4, timeout=10, what="the batches to fail")
    took = time.monotonic() - t0
    status = api.get(f"{P}/status/cam-stock").json()
    assert status["state"] == "error", status
    assert status["reason"].startswith(
        "model yolo11x.pt is not on this machine: put it in RTAI_WEIGHTS_DIR or run rtai models pull yolo11x"
    )
    assert took < 5, took
    out = procs.output(worker)
    assert "Downloading" not in out and "download" not in out.lower().replace("rtai_allow_downloads", ""), out
    assert out.count("model yolo11x failed to load") == 1, out
    assert worker.poll() is None
    worker.terminate()
    assert procs.finish(worker, timeout=30) == 0


def test_stream_declarations_refuse_paths(r, procs, tmp_path):
    add = procs.rtai("stream", "add", "cam1", "--source", "demo", "--model", str(tmp_path / "evil.pt"))
    assert procs.finish(add, timeout=30) == 2
    assert "not a model name" in procs.output(add)
    cameras = tmp_path / "cameras.yml"
    cameras.write_text("streams:\n  - {id: ok, source: demo}\n  - {id: bad, source: demo, model: ../evil.pt}\n")
    load = procs.rtai("stream", "load", str(cameras))
    assert procs.finish(load, timeout=30) == 2
    assert "entry 1 (bad)" in procs.output(load) and "not a model name" in procs.output(load)
    assert r.scard(keys.DESIRED) == 0, "all or nothing"
