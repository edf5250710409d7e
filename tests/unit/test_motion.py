"""Motion gating's decision (producer/motion.py) on synthetic frames, its settings and its wire field."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from common.analytics_settings import AnalyticsSettings, MotionSettings, motion_map
from common.errors import SchemaError
from common.wire import Batch, Frame, Result, decode_batch, decode_result, encode_batch, encode_result, packb
from producer.motion import MotionGate

W, H = 320, 240


def scene(rng: np.random.Generator, square_at: int | None = None, *, noise: float = 3.0) -> np.ndarray:
    img = np.full((H, W, 3), 90.0) + rng.normal(0, noise, (H, W, 3))
    if square_at is not None:
        img[100:150, square_at : square_at + 50] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


def never() -> bool:
    return False


def test_sensor_noise_is_held_and_a_moving_object_is_sent():
    rng = np.random.default_rng(1)
    gate = MotionGate(MotionSettings())
    assert gate.decide(scene(rng), 0.0, never)  # the first frame always goes
    held = [gate.decide(scene(rng), 0.1 * i, never) for i in range(1, 20)]
    assert not any(held), "noise alone is not motion"
    assert gate.decide(scene(rng, square_at=10), 2.0, never)
    assert gate.decide(scene(rng, square_at=40), 2.1, never)
    assert gate.stats.held == 19 and gate.stats.sent_motion == 2
    assert gate.take_held() == 19  # all held before the frame sent next, for the tracker


def test_held_frames_are_handed_to_the_next_frame_sent():
    rng = np.random.default_rng(2)
    gate = MotionGate(MotionSettings())
    gate.decide(scene(rng), 0.0, never)
    gate.take_held()
    for i in range(5):
        assert not gate.decide(scene(rng), 0.1 + 0.1 * i, never)
    assert gate.decide(scene(rng, square_at=100), 1.0, never)
    assert gate.take_held() == 5 and gate.take_held() == 0


def test_objects_in_view_keep_frames_flowing_and_keepalive_sends_one_now_and_then():
    rng = np.random.default_rng(3)
    gate = MotionGate(MotionSettings(keepalive_s=2.0))
    parked = scene(rng, square_at=100)
    gate.decide(parked, 0.0, never)
    assert gate.decide(scene(rng, square_at=100), 0.1, lambda: True), "a parked object keeps its frames"
    assert not gate.decide(scene(rng, square_at=100), 0.2, never)
    assert gate.decide(scene(rng, square_at=100), 2.2, never), "keepalive"
    assert gate.stats.sent_objects == 1 and gate.stats.sent_keepalive == 1


def test_slow_creep_adds_up_against_the_last_frame_sent():
    rng = np.random.default_rng(4)
    gate = MotionGate(MotionSettings(keepalive_s=3600))
    gate.decide(scene(rng, square_at=0), 0.0, never)
    sent = [gate.decide(scene(rng, square_at=x), 0.1 * x, never) for x in range(1, 40)]
    assert any(sent), "an object creeping one pixel a frame is seen once it has moved far enough"
    assert not all(sent)


def test_a_masked_region_never_counts():
    rng = np.random.default_rng(5)
    gate = MotionGate(MotionSettings(mask=[(0.0, 0.3, 0.5, 0.7)]))  # covers rows 72-168, columns 0-160
    gate.decide(scene(rng), 0.0, never)
    assert not gate.decide(scene(rng, square_at=40), 0.1, never), "the change lies inside the mask"
    assert gate.decide(scene(rng, square_at=220), 0.2, never)


def test_motion_settings_are_checked():
    assert AnalyticsSettings.model_validate({"motion": {}}).motion == MotionSettings()
    for bad in ({"pixel_delta": 0}, {"min_area": 0}, {"keepalive_s": 0}, {"mask": [[0.5, 0.1, 0.4, 0.2]]}):
        with pytest.raises(ValidationError):
            MotionSettings.model_validate(bad)
    with pytest.raises(ValidationError, match="outside 0..1"):
        MotionSettings.model_validate({"mask": [[0, 0, 1.5, 1]]})
    assert motion_map(False, ()) is None
    assert motion_map(True, ()) == {"mask": []}
    assert motion_map(False, ("0,0,0.4,0.05",)) == {"mask": [[0.0, 0.0, 0.4, 0.05]]}
    with pytest.raises(ValueError, match="expected x1,y1,x2,y2"):
        motion_map(True, ("0,0,1",))


def _frame(gated: int) -> Frame:
    return Frame(seq=3, t_capture=1.0, w=8, h=8, enc="raw", dw=8, dh=8, data=bytes(192), gated=gated)


def _result(gated: int) -> Result:
    return Result("s", 3, 1, 1.0, 1.0, 1.0, 1.0, "w", "cpu", "m", 8, 8, [], gated=gated)


def test_the_gated_count_travels_from_batch_to_result_and_is_absent_when_zero():
    batch = Batch(stream="s", batch=1, model="m", conf=0.25, imgsz=32, t_enqueue=1.0, frames=[_frame(7)])
    assert decode_batch(encode_batch(batch)).frames[0].gated == 7
    assert decode_result(encode_result(_result(7))).gated == 7
    assert "gated" not in _result(0).to_map()  # the bytes of an ungated stream are as before
    plain = Batch(stream="s", batch=1, model="m", conf=0.25, imgsz=32, t_enqueue=1.0, frames=[_frame(0)])
    assert b"gated" not in encode_batch(plain)
    forged = _result(0).to_map() | {"gated": -1}
    with pytest.raises(SchemaError, match="gated=-1"):
        decode_result(packb(forged))
