"""Per-stream analytics settings: the CLI's flags, cameras.yml, the REST body and the wire agree."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from common import desired, keys
from common.analytics_settings import AnalyticsSettings, parse_shape
from common.config import ProducerSettings
from common.wire import Batch, Frame, decode_batch, encode_batch
from control.api.models import StartRequest
from control.cli import cli
from producer.enqueue import BatchSink


def test_shapes_parse_and_out_of_frame_points_are_refused():
    assert parse_shape("gate=0.5,0.0:0.5,1.0") == ("gate", [(0.5, 0.0), (0.5, 1.0)])
    with pytest.raises(ValueError, match="outside 0..1"):
        AnalyticsSettings(zones=[{"name": "z", "points": [(0, 0), (1.5, 0), (1, 1)]}])
    with pytest.raises(ValueError, match="unique"):
        AnalyticsSettings(
            zones=[{"name": "a", "points": [(0, 0), (1, 0), (1, 1)]}], lines=[{"name": "a", "points": [(0, 0), (1, 1)]}]
        )


def test_batch_carries_the_class_filter_and_old_batches_still_decode():
    frame = Frame(seq=0, t_capture=1.0, w=64, h=48, enc="jpeg", dw=64, dh=48, data=b"x")
    base = {"stream": "s", "batch": 0, "model": "m", "conf": 0.25, "imgsz": 320, "t_enqueue": 1.0, "frames": [frame]}
    assert decode_batch(encode_batch(Batch(**base, classes=["circle"]))).classes == ["circle"]
    assert decode_batch(encode_batch(Batch(**base))).classes is None


def test_rest_body_takes_analytics_settings_beside_the_guides_fields():
    body = StartRequest.model_validate(
        {
            "stream_config": {"url": "demo", "protocol": "file"},
            "analytics_settings": {
                "classes": ["person"],
                "track": {},
                "lines": [{"name": "g", "points": [[0.5, 0], [0.5, 1]]}],
            },
        }
    )
    assert body.analytics_settings.track.tracker_type == "bytetrack"
    with pytest.raises(ValueError):
        StartRequest.model_validate(
            {"stream_config": {"url": "demo", "protocol": "file"}, "analytics_settings": {"x": 1}}
        )


def test_stream_add_flags_reach_the_desired_state(r, redis_server):
    args = [
        "stream",
        "add",
        "door",
        "--source",
        "demo",
        "--redis-url",
        redis_server,
        "--track",
        "--classes",
        "person,car",
    ]
    args += ["--zone", "entrance=0.10,0.20:0.55,0.20:0.55,0.95:0.10,0.95", "--line", "gate=0.5,0.0:0.5,1.0"]
    args += ["--dwell-s", "5", "--snapshots"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    got = desired.settings_for(r, "door", redis_server).analytics
    assert got.classes == ["person", "car"] and got.track.tracker_type == "bytetrack"
    assert got.zones[0].name == "entrance" and len(got.zones[0].points) == 4
    assert got.lines[0].points == [(0.5, 0.0), (0.5, 1.0)] and got.dwell_s == 5 and got.snapshots
    plain = ProducerSettings(stream="p", source="demo")
    assert plain.analytics is None
    BatchSink(r, desired.settings_for(r, "door", redis_server)).register()  # the stream hash shows them too
    assert AnalyticsSettings.model_validate_json(r.hget(keys.stream("door"), "analytics")) == got


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_non_finite_settings_are_refused_by_name(bad: float):
    with pytest.raises(ValueError, match="dwell_s"):
        AnalyticsSettings(dwell_s=bad)


def test_stream_add_motion_flags_reach_the_desired_state(r, redis_server):
    base = ["stream", "add", "porch", "--source", "demo", "--redis-url", redis_server]
    res = CliRunner().invoke(cli, [*base, "--motion-mask", "0,0,0.4,0.06"])
    assert res.exit_code == 0, res.output
    motion = desired.settings_for(r, "porch", redis_server).analytics.motion
    assert motion is not None and motion.mask == [(0.0, 0.0, 0.4, 0.06)] and motion.keepalive_s == 5.0
    bad = CliRunner().invoke(cli, [*base, "--motion-mask", "0,0,0.4"])
    assert bad.exit_code == 2 and "expected x1,y1,x2,y2" in bad.output
