import pytest

from common import keys
from common.config import ProducerSettings, WorkerSettings, build
from common.errors import ConfigError, ModelError
from worker import models


def test_flags_win_over_environment(monkeypatch):
    monkeypatch.setenv("RTAI_MAX_FPS", "5")
    monkeypatch.setenv("RTAI_BATCH_SIZE", "8")
    s = build(ProducerSettings, stream="cam1", source="x.mp4", batch_size=2)
    assert s.max_fps == 5.0 and s.batch_size == 2


def test_bad_setting_names_the_field(monkeypatch):
    monkeypatch.setenv("RTAI_MAX_FRAME_AGE_MS", "soon")
    with pytest.raises(ConfigError, match="max_frame_age_ms"):
        build(WorkerSettings)


def test_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="nonsense"):
        build(WorkerSettings, nonsense=1)


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "../etc", "cam:1"])
def test_stream_ids_are_checked(bad):
    with pytest.raises(ConfigError, match="stream id"):
        keys.check_stream_id(bad)


def test_keys_are_prefixed():
    assert keys.ledger("cam1") == "rtai:ledger:cam1"
    assert keys.queue_key("cam1") == "rq:queue:rtai:cam1"


@pytest.mark.parametrize(
    ("variant", "file"),
    [("multi_gpu_yolov11s", "yolo11s.pt"), ("yolo11x", "yolo11x.pt"), ("yolo11n.pt", "yolo11n.pt")],
)
def test_guide_names_map_to_ultralytics_files(variant, file):
    assert models.canonical(variant) == file


def test_missing_weights_file_says_which(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve(str(tmp_path / "nope.pt"), allow_path=True)


def test_own_model_ships_with_the_package():
    assert models.resolve("rtai-shapes").endswith("rtai-shapes.pt")


def test_defaults_then_environment_then_flags(monkeypatch):
    from common import config  # noqa: PLC0415

    for name in ProducerSettings.model_fields:
        monkeypatch.delenv("RTAI_" + name.upper(), raising=False)
    s = build(ProducerSettings, stream="cam1", source="x.mp4")
    assert (s.max_fps, s.batch_size, s.imgsz) == (
        config.DEFAULT_MAX_FPS,
        config.DEFAULT_BATCH_SIZE,
        config.DEFAULT_IMGSZ,
    )
    monkeypatch.setenv("RTAI_IMGSZ", "640")  # environment values are parsed to the field's type
    monkeypatch.setenv("RTAI_BATCH_SIZE", "")  # an empty variable counts as unset
    s = build(ProducerSettings, stream="cam1", source="x.mp4", imgsz=None)  # a flag left at None does not win
    assert s.imgsz == 640 and s.batch_size == config.DEFAULT_BATCH_SIZE


def test_every_bad_value_is_named_with_where_it_came_from(monkeypatch):
    monkeypatch.setenv("RTAI_MAX_FPS", "fast")
    with pytest.raises(ConfigError) as caught:
        build(ProducerSettings, stream="cam1", source="x.mp4", batch_size=0)
    message = str(caught.value)
    assert message.startswith("invalid settings: ") and "max_fps" in message and "batch_size" in message
    monkeypatch.delenv("RTAI_MAX_FPS")
    with pytest.raises(ConfigError, match="stream: Field required"):
        build(ProducerSettings, source="x.mp4")


def test_prefetch_auto_overlaps_on_a_gpu_and_stays_off_on_the_cpu():
    assert WorkerSettings(device="cpu").prefetch_stage == "off"
    assert WorkerSettings(device="cuda:1").prefetch_stage == "settle"
    assert WorkerSettings(device="cpu", prefetch="detect").prefetch_stage == "detect"


def test_models_export_defaults_to_the_fleets_inference_size():
    from common.config import DEFAULT_IMGSZ  # noqa: PLC0415
    from control.models_cli import export  # noqa: PLC0415

    (imgsz,) = [p for p in export.params if p.name == "imgsz"]
    assert imgsz.default == DEFAULT_IMGSZ == 320
