"""A camera password planted in source URLs shows up nowhere a user or a log reader looks: the REST
API, `rtai status` (text and JSON), `rtai stream ls`, /metrics, the producer daemon's log, and a
malformed Redis URL's error. Real processes: `rtai api`, a `rtai -v producer` daemon, the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request

import pytest

from common import desired, keys
from common.config import role_command

from ..helpers import ROOT, free_port, wait_for

P = "/api/v1/realtime-ai"
SECRET = "S3cr3tPw"
pytestmark = [pytest.mark.slow, pytest.mark.rtsp, pytest.mark.timeout(180)]


def _get(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return resp.read().decode()


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _rtai(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        role_command("control", *args),
        env={"PATH": "/usr/bin:/bin", "RTAI_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_a_planted_camera_password_leaks_nowhere(r, procs, redis_server, rtsp_pattern):
    dead = f"rtsp://admin:{SECRET}@127.0.0.1:{free_port()}/none"
    live = rtsp_pattern.replace("rtsp://", f"rtsp://admin:{SECRET}@", 1)  # the test server ignores credentials
    token_url = f"http://127.0.0.1:{free_port()}/mjpg?user=admin&password={SECRET}"
    daemon = procs.rtai("-v", "producer", log="daemon.log")
    port = free_port()
    api = procs.rtai("api", "--port", str(port), env={"RTAI_API_ALLOW_PRIVATE": "127.0.0.1"}, log="api.log")
    wait_for(lambda: _listening(port), timeout=30, what="rtai api listening")
    base = f"http://127.0.0.1:{port}"

    for sid, url, protocol in (("api-dead", dead, "rtsp"), ("api-live", live, "rtsp"), ("api-http", token_url, "http")):
        body = {"stream_config": {"url": url, "protocol": protocol, "stream_id": sid}}
        assert _post(base, f"{P}/start", body)["service_id"] == sid
    added = _rtai(redis_server, "stream", "add", "cli-dead", "--source", dead)
    assert added.returncode == 0, added.stderr

    def states() -> dict[str, str]:
        return {s: (r.hget(keys.stream(s), "state") or b"").decode() for s in ("api-dead", "api-live", "cli-dead")}

    wait_for(
        lambda: states() == {"api-dead": "reconnecting", "api-live": "running", "cli-dead": "reconnecting"},
        timeout=60,
        what="the dead cameras reconnecting and the live one running",
    )
    # The producer needs the whole URL, and still has it; nothing else does.
    assert desired.get(r, "api-live")["settings"]["source"] == live
    assert r.hget(keys.stream("api-live"), "source").decode() == live.replace(SECRET, "***")

    surfaces: dict[str, str] = {}
    for sid in ("api-dead", "api-live", "api-http", "cli-dead"):
        surfaces[f"/status/{sid}"] = _get(base, f"{P}/status/{sid}")
    for path in (f"{P}/services", f"{P}/gpu-info", "/metrics"):
        surfaces[path] = _get(base, path)
    for args in (("status",), ("status", "--json"), ("stream", "ls")):
        done = _rtai(redis_server, *args)
        assert done.returncode == 0, done.stderr
        surfaces["rtai " + " ".join(args)] = done.stdout + done.stderr
    bad = _rtai(redis_server, "status", "--redis-url", f"redis://:{SECRET}@bad:url")
    assert bad.returncode != 0
    surfaces["rtai status --redis-url <malformed>"] = bad.stdout + bad.stderr
    unreachable = _rtai(redis_server, "status", "--redis-url", f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")
    assert unreachable.returncode != 0
    surfaces["rtai status --redis-url <unreachable>"] = unreachable.stdout + unreachable.stderr
    for proc in (daemon, api):
        proc.terminate()
        procs.finish(proc, timeout=30)
    surfaces["producer daemon log"] = procs.output(daemon)
    surfaces["api log"] = procs.output(api)

    leaks = [name for name, text in surfaces.items() if SECRET in text]
    assert leaks == [], {name: surfaces[name] for name in leaks}

    # ... and where a URL is shown, its redacted form is.
    shown = "admin:***@127.0.0.1"
    status_live = json.loads(surfaces["/status/api-live"])
    assert shown in status_live["settings"]["source"]
    status_dead = json.loads(surfaces["/status/api-dead"])
    # The reason names the cause after the redacted URL ("...: connection refused by 127.0.0.1:PORT").
    assert status_dead["reason"].startswith(f"cannot open {dead.replace(SECRET, '***')}")
    assert "refused" in status_dead["reason"]
    assert "password=***" in json.loads(surfaces["/status/api-http"])["settings"]["source"]
    services = {s["service_id"]: s["source"] for s in json.loads(surfaces[f"{P}/services"])["services"]}
    assert services["api-live"] == live.replace(SECRET, "***") and services["cli-dead"] == dead.replace(SECRET, "***")
    report = json.loads(surfaces["rtai status --json"])["streams"]
    assert report["cli-dead"]["source"] == dead.replace(SECRET, "***")
    assert f"cannot open {dead.replace(SECRET, '***')}" in surfaces["rtai status"]
    assert dead.replace(SECRET, "***") in surfaces["rtai stream ls"]
    assert f"from {live.replace(SECRET, '***')}" in surfaces["producer daemon log"]
    assert "bad Redis URL 'redis://:***@bad:url'" in surfaces["rtai status --redis-url <malformed>"]
    # An unreachable Redis is named by host and port only (no URL, so no password to mask).
    assert "nothing listens at 127.0.0.1:" in surfaces["rtai status --redis-url <unreachable>"]
