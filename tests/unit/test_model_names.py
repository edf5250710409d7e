"""The model-name rule (shared by API, stream settings and workers), where weights may come from,
and safe loading: crafted pickles are refused before anything in them runs."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from common import models as names
from common.config import ProducerSettings
from common.errors import ModelError
from control.api.models import ModelSettings
from worker import models, weights
from worker.runtime import MODEL_RETRY_MAX_S, MODEL_RETRY_MIN_S, ModelFailure

from ..checkpoints import evil_checkpoint, full_pickle_checkpoint, sneaky_checkpoint

GOOD = [
    "rtai-shapes",
    "yolo11n",
    "yolo11x.pt",
    "yolo11s.yaml",
    "multi_gpu_yolov11m",
    "my-cam_v2.pt",
    "best.2026-11.pt",
]
BAD = [
    "/tmp/evil.pt",
    "../evil.pt",
    "weights/evil.pt",
    "..pt",
    "a..pt",
    ".hidden.pt",
    "evil.pth",
    "evil",
    "yolo11s.yaml/x",
    "C:\\evil.pt",
    "rtai-shapes\n",
    "x" * 200 + ".pt",
    "",
    "yolo12n.yaml",
]


@pytest.mark.parametrize("name", GOOD)
def test_model_names_are_accepted_everywhere(name):
    assert names.check_name(name) == name
    assert ModelSettings(variant=name).variant == name
    assert ProducerSettings(stream="s", source="x", model=name).model == name


@pytest.mark.parametrize("name", BAD)
def test_paths_and_odd_names_are_refused_everywhere(name):
    with pytest.raises(ModelError, match="not a model name"):
        names.check_name(name)
    with pytest.raises(ValidationError):
        ModelSettings(variant=name)
    with pytest.raises(ValidationError, match="not a model name"):
        ProducerSettings(stream="s", source="x", model=name)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """RTAI_WEIGHTS_DIR and an Ultralytics cache of our own, both empty, downloads off."""
    wdir, cache = tmp_path / "weights", tmp_path / "cache"
    wdir.mkdir()
    cache.mkdir()
    monkeypatch.setenv("RTAI_WEIGHTS_DIR", str(wdir))
    monkeypatch.delenv("RTAI_TRUST_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("RTAI_ALLOW_DOWNLOADS", raising=False)
    monkeypatch.setattr(models, "ultralytics_weights_dir", lambda: cache)
    return wdir, cache


def test_missing_stock_model_says_how_to_get_it_without_downloading(dirs, monkeypatch):
    import ultralytics.utils.downloads as dl  # noqa: PLC0415

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(dl, "attempt_download_asset", no_network)
    with pytest.raises(ModelError) as err:
        models.locate("multi_gpu_yolov11s")
    assert str(err.value).startswith(
        "model yolo11s.pt is not on this machine: put it in RTAI_WEIGHTS_DIR or run rtai models pull yolo11s"
    )


def test_weights_come_from_the_weights_dir_then_the_cache_never_the_cwd(dirs, monkeypatch, tmp_path):
    wdir, cache = dirs
    (cache / "yolo11n.pt").write_bytes(b"x")
    assert models.locate("yolo11n") == models.Weights(str(cache / "yolo11n.pt"), trusted=False)
    (wdir / "yolo11n.pt").write_bytes(b"x")
    assert models.locate("yolo11n.pt").path == str(wdir / "yolo11n.pt")
    monkeypatch.setenv("RTAI_TRUST_WEIGHTS_DIR", "1")
    assert models.locate("yolo11n.pt").trusted
    assert not models.locate("rtai-shapes").trusted
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mine.pt").write_bytes(b"x")
    monkeypatch.chdir(cwd)
    with pytest.raises(ModelError, match=r"model mine.pt is not in RTAI_WEIGHTS_DIR"):
        models.locate("mine.pt")


def test_weights_dir_listing_shows_operator_files(dirs):
    wdir, _ = dirs
    (wdir / "mine.pt").write_bytes(b"x")
    (wdir / "notes.txt").write_text("x")
    listed = {a.name: a for a in names.available()}
    assert listed["rtai-shapes"].present and listed["rtai-shapes"].kind == "bundled"
    assert listed["mine.pt"].kind == "weights_dir"
    assert not listed["yolo11s"].present
    assert "notes.txt" not in listed


# --- safe loading -------------------------------------------------------------------------------------


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    assert weights.refused_globals(str(evil)) == ["posix.system"]
    with pytest.raises(ModelError, match=r"imports posix.system, which safe loading does not allow"):
        models.load(str(evil), allow_path=True)
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_pickle_that_passes_the_scan_is_stopped_by_the_restricted_unpickler(tmp_path):
    marker = tmp_path / "pwned"
    sneaky = sneaky_checkpoint(tmp_path / "sneaky.pt", marker)
    assert weights.refused_globals(str(sneaky)) == []
    with pytest.raises(ModelError, match="refused"):
        models.load(str(sneaky), allow_path=True)
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_bundled_model_loads_safely_and_a_full_pickle_only_when_trusted(tmp_path):
    model = models.load("rtai-shapes")
    assert list(model.names.values()) == ["circle", "square", "triangle"]
    full = full_pickle_checkpoint(tmp_path / "full.pt")
    with pytest.raises(ModelError, match=r"imports datetime.date"):
        weights.load_yolo(str(full), trusted=False, label="full.pt")
    assert list(weights.load_yolo(str(full), trusted=True, label="full.pt").names.values())[0] == "circle"


def test_not_a_zip_checkpoint_is_refused(tmp_path):
    raw = tmp_path / "raw.pt"
    raw.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelError, match="not a torch zip checkpoint"):
        models.load(str(raw), allow_path=True)


def test_failed_load_backs_off_and_grows():
    first = ModelFailure.after(ModelError("x"), None)
    assert first.delay_s == MODEL_RETRY_MIN_S
    later = first
    for _ in range(10):
        later = ModelFailure.after(ModelError("x"), later)
    assert later.delay_s == MODEL_RETRY_MAX_S


def test_rtai_models_ls_and_pull_without_network(dirs, monkeypatch):
    import ultralytics.utils.downloads as dl  # noqa: PLC0415
    from click.testing import CliRunner  # noqa: PLC0415

    from control.cli import cli  # noqa: PLC0415

    wdir, _ = dirs
    (wdir / "mine.pt").write_bytes(b"x")
    (wdir / "yolo11s.pt").write_bytes(b"x")
    rows = {row["name"]: row for row in json.loads(CliRunner().invoke(cli, ["models", "ls", "--json"]).stdout)}
    assert rows["mine.pt"]["path"] == str(wdir / "mine.pt")
    assert rows["yolo11s"]["present"] and not rows["yolo11m"]["present"]

    fetched = []
    monkeypatch.setattr(dl, "attempt_download_asset", lambda target: fetched.append(target) or str(target))
    done = CliRunner().invoke(cli, ["models", "pull", "multi_gpu_yolov11s"])
    assert done.exit_code == 0 and fetched == [], "already in RTAI_WEIGHTS_DIR: nothing to fetch"
    refused = CliRunner().invoke(cli, ["models", "pull", "../etc/passwd"])
    assert refused.exit_code != 0 and "not a stock model" in refused.output
    failed = CliRunner().invoke(cli, ["models", "pull", "yolo11m"])
    assert fetched == [wdir / "yolo11m.pt"] and "download failed" in failed.output
