"""Which device the model gets: a CUDA image asks the driver for a GPU at start-up.

The driver (libcuda.so.1) is never in the image: the NVIDIA container toolkit, or a device
plugin, mounts the host's into the container when it is given a GPU. Its absence is the usual
sign of a container started without one, and the server says so instead of failing later.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any

DRIVER = "libcuda.so.1"
_NO_DEVICE, _INSUFFICIENT_DRIVER = 100, 35  # CUresult codes worth naming
_GIVE_GPU = (
    "give the container a GPU: the NVIDIA container toolkit (docker or podman run --gpus all, "
    "or --device nvidia.com/gpu=all), or an nvidia.com/gpu limit in Kubernetes"
)


@dataclass(frozen=True, slots=True)
class Device:
    """What the model runs on: `name` is "cpu" or "cuda:0" (the value of OMI_DEVICE)."""

    name: str
    detail: str = ""  # the GPU's name and the driver's CUDA version
    missing: str = ""  # for a CUDA image without a GPU: why, and what to do

    @property
    def accelerator(self) -> str:
        return self.name.split(":", 1)[0]


def _driver_problem(code: int) -> str:
    if code == _NO_DEVICE:
        return "the CUDA driver sees no GPU (CUDA_VISIBLE_DEVICES may hide them)"
    if code == _INSUFFICIENT_DRIVER:
        return "the host's NVIDIA driver is older than this image's CUDA"
    return f"cuInit failed with CUDA error {code}"


def _cuda(loader: Any = ctypes.CDLL) -> Device | str:
    """The first GPU the driver offers, or why there is none."""
    try:
        driver = loader(DRIVER)
    except OSError:
        return f"{DRIVER} (the NVIDIA driver) is not in the container"
    code = driver.cuInit(0)
    if code != 0:
        return _driver_problem(code)
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    if driver.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "the CUDA driver sees no GPU"
    driver.cuDriverGetVersion(ctypes.byref(version))
    handle, name = ctypes.c_int(0), ctypes.create_string_buffer(256)
    if driver.cuDeviceGet(ctypes.byref(handle), 0) == 0:
        driver.cuDeviceGetName(name, len(name), handle)
    found = name.value.decode(errors="replace") or "a GPU"
    cuda = f"{version.value // 1000}.{version.value % 1000 // 10}"
    return Device(name="cuda:0", detail=f"{found}, {count.value} visible, driver CUDA {cuda}")


def probe(wanted: dict[str, Any] | None, loader: Any = ctypes.CDLL) -> Device:
    """The device for a serving config's `device` entry. OMI_DEVICE=cpu skips the probe (a CUDA
    image on purpose on a CPU); a CPU image never looks for a GPU."""
    forced = os.environ.get("OMI_DEVICE", "").strip()
    if forced == "cpu" or not wanted or wanted.get("accelerator") != "cuda":
        return Device(name="cpu")
    found = _cuda(loader)
    if isinstance(found, Device):
        return found
    cuda = wanted.get("cuda") or "?"
    return Device(
        name="cpu",
        missing=f"this image is built for CUDA {cuda} but has no GPU: {found}; the model gets "
        f"device cpu (OMI_DEVICE=cpu) and runs there only if it can. To use the GPU, {_GIVE_GPU}",
    )
