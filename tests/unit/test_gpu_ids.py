"""The one mapping from a torch device to the GPU outside the process (common/gpu.physical_id), which
the worker's label, its per-GPU stats and the guide's API share."""

from __future__ import annotations

import pytest

from common import gpu
from worker.process import gpu_label


@pytest.mark.parametrize(
    ("visible", "device", "ident", "index"),
    [
        (None, "cuda:1", "1", 1),
        (None, "cuda", "0", 0),
        ("2,3", "cuda:0", "2", 2),
        ("2,3", "cuda:1", "3", 3),
        ("3", "cuda", "3", 3),
        (None, "cpu", None, None),
        ("2", "cpu", None, None),
    ],
)
def test_physical_id_honours_cuda_visible_devices(monkeypatch, visible, device, ident, index):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert gpu.physical_id(device) == ident
    assert gpu.nvml_index(device) == index
    assert gpu_label(device) == (ident or "cpu")


def test_a_uuid_is_the_label_and_nvml_resolves_it_or_says_nothing(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5f3c0e1a-0000-0000-0000-000000000000")
    assert gpu_label("cuda:0") == "GPU-5f3c0e1a-0000-0000-0000-000000000000"
    assert gpu.nvml_index("cuda:0") is None  # no NVML on this host; never a guessed index


def test_a_device_the_process_cannot_see_is_a_clear_error(monkeypatch):
    from common.errors import ConfigError  # noqa: PLC0415

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert gpu.physical_id("cuda:1") is None
    with pytest.raises(ConfigError, match="cuda:1 is not among CUDA_VISIBLE_DEVICES=2"):
        gpu_label("cuda:1")
