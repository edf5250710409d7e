"""A YAML camera list declares streams for producer daemons: all or nothing, bad entries named."""

from __future__ import annotations

import pytest

from common import desired
from common.errors import ConfigError

from ..helpers import ROOT, wait_for
from .fleet import counts


def test_camera_list_declares_every_stream(r, redis_server, tmp_path):
    path = tmp_path / "cameras.yml"
    path.write_text(
        "streams:\n  - id: door\n    source: rtsp://10.0.0.5/s\n    max_fps: 5\n"
        "  - id: lot\n    source: /media/lot.mp4\n    loop: true\n    pinned: true\n"
    )
    assert desired.load_file(r, path, redis_server) == ["door", "lot"]
    assert desired.get(r, "door")["settings"]["max_fps"] == 5
    assert desired.get(r, "lot")["settings"]["pinned"] is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("streams:\n  - id: ok\n    source: a.mp4\n  - id: bad id\n    source: x\n", "stream id 'bad id'"),
        ("streams:\n  - id: cam\n    source: a.mp4\n    max_fps: -3\n", "entry 0 (cam)"),
        ("streams:\n  - source: a.mp4\n", "entry 0 needs an 'id'"),
        ("streams: {a: 1}\n", "must be a list"),
        ("streams: [\n", "camera list"),
    ],
)
def test_bad_camera_list_declares_nothing_and_names_the_entry(r, redis_server, tmp_path, text, message):
    path = tmp_path / "cameras.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        desired.load_file(r, path, redis_server)
    assert desired.streams(r) == []


def test_shipped_camera_list_is_valid_and_empty(r, redis_server):
    assert desired.load_file(r, ROOT / "cameras.yml", redis_server) == []


@pytest.mark.timeout(90)
def test_daemon_runs_the_streams_of_its_camera_list(r, procs, tmp_path):
    path = tmp_path / "cameras.yml"
    path.write_text("streams:\n  - id: filecam\n    source: demo\n    loop: true\n    max_fps: 10\n")
    daemon = procs.rtai("producer", "--streams-file", str(path))
    worker = procs.rtai("worker", "--detector", "noop", "--preload", "")
    wait_for(lambda: counts(r, "filecam")["published"] >= 8, timeout=60, what="results of the listed camera")
    for p in (daemon, worker):
        p.terminate()
        assert procs.finish(p, timeout=30) == 0


def test_daemon_declares_its_list_again_only_when_redis_forgot_it(r, redis_server, tmp_path, caplog):
    from producer.daemon import ProducerDaemon  # noqa: PLC0415

    path = tmp_path / "cameras.yml"
    path.write_text("streams:\n  - id: door\n    source: demo\n  - id: lot\n    source: demo\n")
    streams, marker = desired.declare_file(r, path, redis_server)
    assert streams == ["door", "lot"] and r.exists(marker)
    daemon = ProducerDaemon(redis_server, max_streams=0)  # claims nothing: only the list is watched
    daemon.watch_file(path, marker)

    desired.remove(r, "door")  # on purpose, while Redis stays up
    daemon.tick()
    assert desired.streams(r) == ["lot"]

    r.flushall()  # what a restart without persistence does
    path.write_text("streams: [\n")  # and the file is broken meanwhile: one error, not one per tick
    daemon.tick()
    daemon.tick()
    assert desired.streams(r) == []
    assert [rec.levelname for rec in caplog.records].count("ERROR") == 1
    path.write_text("streams:\n  - id: door\n    source: demo\n")
    daemon.tick()
    assert desired.streams(r) == ["door"]
    assert any("declared 1 stream(s) again" in rec.getMessage() for rec in caplog.records)
    daemon.client.close()
