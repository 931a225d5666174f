"""The device a model gets: a CUDA image asks the driver; no driver or no GPU says why."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import pytest

from omi_build.runtime._device import Device, probe
from omi_build.runtime._model import Config, load_model

CUDA = {"accelerator": "cuda", "cuda": "12.4"}


class _Driver:
    """libcuda.so.1's few calls the probe makes, answering as a driver with `count` GPUs."""

    def __init__(self, init: int = 0, count: int = 1) -> None:
        self._init, self._count = init, count

    def cuInit(self, _flags: int) -> int:  # noqa: N802 - the driver's own names
        return self._init

    def cuDeviceGetCount(self, count: Any) -> int:  # noqa: N802
        ctypes.cast(count, ctypes.POINTER(ctypes.c_int))[0] = self._count
        return 0

    def cuDriverGetVersion(self, version: Any) -> int:  # noqa: N802
        ctypes.cast(version, ctypes.POINTER(ctypes.c_int))[0] = 12040
        return 0

    def cuDeviceGet(self, _handle: Any, _ordinal: int) -> int:  # noqa: N802
        return 0

    def cuDeviceGetName(self, name: Any, _size: int, _handle: Any) -> int:  # noqa: N802
        name.value = b"NVIDIA H200"
        return 0


def _no_driver(_name: str) -> None:
    msg = "libcuda.so.1: cannot open shared object file"
    raise OSError(msg)


@pytest.fixture(autouse=True)
def _no_device_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMI_DEVICE", raising=False)


def test_a_cuda_image_with_a_gpu_gets_cuda_0() -> None:
    found = probe(CUDA, loader=lambda _name: _Driver())
    assert found == Device(name="cuda:0", detail="NVIDIA H200, 1 visible, driver CUDA 12.4")
    assert found.accelerator == "cuda"


@pytest.mark.parametrize(
    ("loader", "reason"),
    [
        (_no_driver, "libcuda.so.1 (the NVIDIA driver) is not in the container"),
        (lambda _name: _Driver(init=100), "sees no GPU"),
        (lambda _name: _Driver(init=35), "older than this image's CUDA"),
        (lambda _name: _Driver(count=0), "sees no GPU"),
    ],
)
def test_a_cuda_image_without_a_gpu_says_why_and_runs_on_the_cpu(loader: Any, reason: str) -> None:
    found = probe(CUDA, loader=loader)
    assert found.name == "cpu"
    assert "built for CUDA 12.4 but has no GPU" in found.missing
    assert reason in found.missing
    assert "--gpus all" in found.missing  # what to do about it


def test_a_cpu_image_and_omi_device_cpu_never_ask_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_name: str) -> None:
        msg = "the driver was asked"
        raise AssertionError(msg)

    assert probe({"accelerator": "cpu", "cuda": None}, loader=refuse) == Device(name="cpu")
    assert probe(None, loader=refuse) == Device(name="cpu")
    monkeypatch.setenv("OMI_DEVICE", "cpu")
    assert probe(CUDA, loader=refuse) == Device(name="cpu")


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        ("def load(self, model_dir, device='cpu'):\n        self.seen = device", "cuda:0"),
        ("def load(self, model_dir, **options):\n        self.seen = options['device']", "cuda:0"),
        ("def load(self, model_dir):\n        self.seen = os.environ['OMI_DEVICE']", "cuda:0"),
    ],
)
def test_the_model_learns_its_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signature: str, expected: str
) -> None:
    (tmp_path / "model.py").write_text(
        f"import os\n\nclass M:\n    {signature}\n\n    def predict(self, inputs):\n        return inputs\n",
        encoding="utf-8",
    )
    config = Config(
        raw={"model": {"module": "model.py", "class": "M"}}, directory=tmp_path, inputs=(), outputs=()
    )
    monkeypatch.setenv("OMI_DEVICE", "")  # restored after the test: load_model sets it
    assert load_model(config, "cuda:0").seen == expected
