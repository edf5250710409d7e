"""The REST control plane on a real Redis: the guide's body, errors, auth, OpenAPI, metrics; and a
service started through the API running on real producer daemon and worker processes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from common import desired, keys

from ..helpers import wait_for
from .fleet import counts, frames, sink

GUIDE_BODY = {
    "stream_config": {"url": "rtsp://your-camera:554/stream", "protocol": "rtsp"},
    "model_settings": {
        "variant": "multi_gpu_yolov11s",
        "device": "auto",
        "enable_multi_gpu": True,
        "load_balancing": True,
        "gpu_devices": None,
        "max_workers": 4,
    },
    "processing_settings": {"max_fps": 30, "batch_size": 2},
}
P = "/api/v1/realtime-ai"


@pytest.fixture
def api(r, redis_server, monkeypatch):
    from control.api.app import create_app  # noqa: PLC0415

    # The guide's camera (your-camera) does not resolve here; the operator's allow-list lets it in.
    monkeypatch.setenv("RTAI_API_ALLOW_PRIVATE", "all")

    return TestClient(create_app(redis_server))


def test_guide_body_is_accepted_and_becomes_desired_state(api, r):
    resp = api.post(f"{P}/start", json=GUIDE_BODY)
    assert resp.status_code == 200, resp.text
    sid = resp.json()["service_id"]
    assert resp.json()["results_channel"] == f"rtai:results:{sid}"
    entry = desired.get(r, sid)
    assert entry["settings"]["source"] == "rtsp://your-camera:554/stream"
    assert entry["settings"]["model"] == "multi_gpu_yolov11s"
    assert entry["settings"]["half"] is True
    assert (entry["settings"]["max_fps"], entry["settings"]["batch_size"], entry["settings"]["max_workers"]) == (
        30,
        2,
        4,
    )
    listed = api.get(f"{P}/services").json()["services"]
    assert [s["service_id"] for s in listed] == [sid]
    status = api.get(f"{P}/status/{sid}").json()
    # No producer daemon runs in this test: the status says so instead of waiting as `pending`.
    assert status["state"] == "unclaimed" and "no producer daemon is running" in status["reason"], status
    assert status["ledger"]["produced"] == 0
    assert api.post(f"{P}/stop/{sid}").json() == {"service_id": sid, "status": "stopping"}
    assert desired.streams(r) == []


def test_parallel_streams_and_gpu_memory_mb_reach_the_stream(api, r):
    """A service is one stream: parallel_streams is how many of its batches run at once (max_workers)."""
    body = {
        **GUIDE_BODY,
        "model_settings": {**GUIDE_BODY["model_settings"], "max_workers": None, "gpu_memory_mb": 4096},
        "processing_settings": {"max_fps": 30, "batch_size": 2, "parallel_streams": 3},
    }
    resp = api.post(f"{P}/start", json=body)
    assert resp.status_code == 200, resp.text
    settings = desired.get(r, resp.json()["service_id"])["settings"]
    assert (settings["max_workers"], settings["gpu_memory_mb"]) == (3, 4096)
    body["model_settings"]["max_workers"] = 2
    resp = api.post(f"{P}/start", json=body)
    assert resp.status_code == 422
    assert "parallel_streams (3) and model_settings.max_workers (2) disagree" in resp.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model_settings": GUIDE_BODY["model_settings"]}, "stream_config"),
        ({**GUIDE_BODY, "processing_settings": {"max_fps": -1, "batch_size": 2}}, "max_fps"),
        ({**GUIDE_BODY, "model_settings": {"variant": "not a model"}}, "variant"),
        ({**GUIDE_BODY, "model_settings": {"device": "tpu"}}, "device"),
        ({**GUIDE_BODY, "surprise": 1}, "surprise"),
    ],
)
def test_wrong_bodies_get_422_naming_the_field(api, body, field):
    resp = api.post(f"{P}/start", json=body)
    assert resp.status_code == 422
    assert field in str([e["loc"] for e in resp.json()["detail"]])


def test_unknown_service_is_404(api):
    assert api.get(f"{P}/status/nope").status_code == 404
    assert api.post(f"{P}/stop/nope").status_code == 404
    assert api.get(f"{P}/status/..%2Fetc").status_code == 404


def test_bearer_token_is_enforced(r, redis_server):
    from control.api.app import create_app  # noqa: PLC0415

    client = TestClient(create_app(redis_server, token="s3cret"))
    assert client.get(f"{P}/services").status_code == 401
    assert client.get(f"{P}/services", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(f"{P}/services", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_gpu_info_without_gpus_is_a_clear_empty_answer(api):
    body = api.get(f"{P}/gpu-info").json()
    assert body["fleet"] == [] and body["api_host_gpus"] == [] and body["cpu_workers"] == 0


def test_metrics_expose_ledger_and_latency(api, r, procs):
    s = sink(r, "cam1")
    s.push(frames(4))
    proc = procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")
    assert procs.finish(proc) == 0
    response = api.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("rtai_frames_total", (("outcome", "published"), ("stream", "cam1")))] == 4
    assert samples[("rtai_latency_ms_count", (("stream", "cam1"),))] == 4
    assert samples[("rtai_latency_ms_bucket", (("le", "+Inf"), ("stream", "cam1")))] == 4
    # Prometheus' base unit (promtool: no abbreviated units): the same histogram in seconds.
    assert samples[("rtai_latency_seconds_count", (("stream", "cam1"),))] == 4
    assert samples[("rtai_latency_seconds_bucket", (("le", "10.0"), ("stream", "cam1")))] == 4
    seconds_sum = samples[("rtai_latency_seconds_sum", (("stream", "cam1"),))]
    assert seconds_sum * 1000 == samples[("rtai_latency_ms_sum", (("stream", "cam1"),))]
    (worker,) = (n.decode() for n in r.smembers(keys.WORKERS))
    assert samples[("rtai_worker_frames_total", (("gpu", "cpu"), ("worker", worker)))] == 4
    assert samples[("rtai_rejected_jobs_total", ())] == 0
    # Every family the hand-written exposition had, with its type.
    assert {name: f.type for name, f in families.items()} == {
        "rtai_frames": "counter",
        "rtai_frames_in_flight": "gauge",
        "rtai_queue_depth": "gauge",
        "rtai_stream_state": "gauge",
        "rtai_latency_seconds": "histogram",
        "rtai_latency_ms": "histogram",
        "rtai_worker_frames": "counter",
        "rtai_worker_fps": "gauge",
        "rtai_worker_up": "gauge",
        "rtai_gpu_utilization_pct": "gauge",
        "rtai_gpu_memory_used_mb": "gauge",
        "rtai_gpu_temperature_c": "gauge",
        "rtai_gpu_power_w": "gauge",
        "rtai_rejected_jobs": "counter",
        # analytics (tracks, zones, events)
        "rtai_events": "counter",
        "rtai_zone_tracks": "gauge",
        "rtai_tracking_frames": "counter",
    }


def test_openapi_document_names_every_route(api):
    doc = api.get("/openapi.json").json()
    for path in ("/start", "/status/{service_id}", "/stop/{service_id}", "/services", "/gpu-info", "/models"):
        assert P + path in doc["paths"]
    assert "/metrics" in doc["paths"]


@pytest.mark.timeout(120)
def test_service_started_through_the_api_runs_on_the_fleet(api, r, procs):
    daemon = procs.rtai("producer")
    worker = procs.rtai("worker", "--detector", "noop", "--preload", "")
    body = {
        **GUIDE_BODY,
        "stream_config": {"url": "demo", "protocol": "file", "loop": True},
        "model_settings": {**GUIDE_BODY["model_settings"], "variant": "rtai-shapes"},
        "processing_settings": {"max_fps": 10, "batch_size": 2},
    }
    sid = api.post(f"{P}/start", json=body).json()["service_id"]
    wait_for(
        lambda: api.get(f"{P}/status/{sid}").json()["ledger"]["published"] >= 10,
        timeout=60,
        what="results of the API-started service",
    )
    st = api.get(f"{P}/status/{sid}").json()
    assert st["state"] == "running" and st["producer"] and st["gpus"].get("cpu", 0) >= 10
    assert st["latency_ms"]["p50"] is not None
    assert api.post(f"{P}/stop/{sid}").status_code == 200
    wait_for(lambda: api.get(f"{P}/status/{sid}").json()["state"] == "stopped", timeout=15, what="stopped")
    wait_for(lambda: counts(r, sid)["in_flight"] == 0, timeout=30, what="drained")
    for p in (daemon, worker):
        p.terminate()
        assert procs.finish(p, timeout=30) == 0
    assert not r.exists(keys.claim(sid))
