"""`rtai up` as a user runs it: the demo with no camera, GPU or download; Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import psutil
import pytest

from common.config import role_command

from ..helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.timeout(180)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RTAI_REDIS_URL"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def test_up_runs_the_demo_and_ctrl_c_stops_everything(tmp_path):
    log = tmp_path / "up.log"
    api_port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            role_command("control", "up", "--threads", "2", "--show", "--api-port", str(api_port)),
            cwd=ROOT,
            # An empty engine cache (up exports); its run file in tmp_path.
            env=_env(RTAI_WEIGHTS_DIR=str(tmp_path / "weights"), XDG_RUNTIME_DIR=str(tmp_path)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "demo #" in log.read_text(), timeout=120, what="detections printed by --show")
        wait_for(
            lambda: "published" in log.read_text() and "[demo] running" in log.read_text(),
            timeout=30,
            what="a status line with the demo running",
        )
        status = wait_for(
            lambda: _get(f"http://127.0.0.1:{api_port}/api/v1/realtime-ai/status/demo"), timeout=30, what="the REST API"
        )
        assert status["state"] == "running" and status["ledger"]["published"] > 0
        # A camera added through the API (as the live view's "Add camera" does) runs on up's daemon.
        body = {
            "stream_config": {"url": "demo", "protocol": "file", "stream_id": "added", "loop": True},
            "model_settings": {"variant": "rtai-shapes"},  # what the page's dialog sends
        }
        started = _post(f"http://127.0.0.1:{api_port}/api/v1/realtime-ai/start", body)
        assert started["service_id"] == "added"
        added = wait_for(
            lambda: (
                (st := _get(f"http://127.0.0.1:{api_port}/api/v1/realtime-ai/status/added"))
                and st["ledger"]["published"] > 0
                and st
            ),
            timeout=30,
            what="results of the stream added through the API",
        )
        assert added["state"] == "running" and added["producer"], added
        # Other commands find up's private Redis without RTAI_REDIS_URL (the run file).
        assert (tmp_path / "rtai" / "redis.url").exists()
        st = subprocess.run(
            role_command("control", "status", "--json"),
            cwd=ROOT,
            env=_env(XDG_RUNTIME_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert st.returncode == 0 and {"demo", "added"} <= set(json.loads(st.stdout)["streams"]), st.stderr
        engines = [w.get("engines", "") for w in json.loads(st.stdout)["workers"].values()]
        assert any("rtai-shapes@" in e and "=onnx" in e for e in engines), (
            f"the CPU worker runs up's ONNX export (ONNX Runtime), as its heartbeat says: {engines}"
        )
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5, "redis, the worker supervisor and its child, the producer, the daemon, the API"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert not (tmp_path / "rtai" / "redis.url").exists(), "a clean exit removes the run file"
    assert "export RTAI_REDIS_URL=redis://127.0.0.1:" in text
    assert "Traceback" not in text
    assert "rtai up: rtai-shapes: built" in text, "up exported the model to ONNX for the CPU worker"
    final = text[text.rindex("STREAM ") :]
    row = next(line for line in final.splitlines() if line.startswith("demo "))
    prod, pub, drop, fail, flight = (int(v) for v in row.split()[2:7])
    assert pub > 0 and flight == 0 and prod == pub + drop + fail, row
    wait_for(
        lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
        timeout=20,
        what="every child process gone",
    )
    labels = {
        line.split(": ", 1)[1].split()[0]
        for line in text.splitlines()
        if line.startswith("demo #") and ": " in line and line.split(": ", 1)[1] != "-"
    }
    assert labels <= {"circle", "square", "triangle"} and labels, "the bundled model's classes were shown"


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_a_killed_up_takes_its_whole_fleet_with_it(tmp_path):
    """SIGKILL (or the OOM killer) gives `rtai up` no chance to stop its children: they die with it."""
    proc = subprocess.Popen(
        role_command("control", "up", "--no-export", "--threads", "1"),
        cwd=ROOT,
        env=_env(XDG_RUNTIME_DIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: list[psutil.Process] = []
    try:
        up = psutil.Process(proc.pid)

        def fleet() -> list[psutil.Process]:
            kids = up.children(recursive=True)
            names = " ".join(" ".join(k.cmdline()) for k in kids if k.is_running())
            return kids if "redis-server" in names and names.count("producer") >= 2 and "--workers" in names else []

        children = wait_for(fleet, timeout=60, what="redis, the producer, the daemon and the workers")
        wait_for(lambda: len(up.children(recursive=True)) > len(children), timeout=30, what="the worker process")
        children = up.children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        def alive() -> list[str]:
            return [
                " ".join(c.cmdline()[:4]) for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
            ]

        wait_for(lambda: not alive(), timeout=20, what="every child of the killed rtai up gone")
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in children:  # only up's own: the session's Redis and RTSP servers are children of pytest too
            if c.is_running():
                c.kill()


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_up_without_redis_server_says_how_to_get_one(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = _env(PATH=str(bindir))
    res = subprocess.run(
        role_command("control", "up", "--duration", "1"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "apt-get install redis-server" in res.stderr and "docker compose up" in res.stderr
    assert "Traceback" not in res.stderr


def test_status_json_and_subscribe_replay(r, procs):
    from ..integration.fleet import frames, sink  # noqa: PLC0415

    s = sink(r, "cam1")
    for _ in range(3):
        s.push(frames(2))
    assert procs.finish(procs.rtai("worker", "--burst", "--detector", "noop", "--preload", "")) == 0
    st = procs.rtai("status", "--json")
    assert procs.finish(st) == 0
    report = json.loads(procs.output(st))
    assert report["streams"]["cam1"]["ledger"]["published"] == 6
    assert sum(w["frames"] for w in report["workers"].values()) == 6
    sub = procs.rtai("subscribe", "cam1", "--replay", "10", "--json", "--timeout", "1")
    assert procs.finish(sub) == 0
    lines = [json.loads(x) for x in procs.output(sub).splitlines() if x.startswith("{")]
    assert sorted(x["seq"] for x in lines) == list(range(6))


def test_rq_info_reads_the_fleet_with_the_project_serializer(r, procs, redis_server):
    from ..integration.fleet import frames, sink  # noqa: PLC0415

    sink(r, "cam1").push(frames(2))
    res = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "rq"),
            "info",
            "--serializer",
            "common.wire.MsgpackSerializer",
            "-u",
            redis_server,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "rtai:cam1" in res.stdout and "1" in res.stdout
