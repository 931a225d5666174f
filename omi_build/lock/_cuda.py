"""Which CUDA a target's wheels carry, checked against the version the target declares.

NVIDIA publishes CUDA's user-space libraries as wheels. CUDA 12's carry the major in the
name (`nvidia-cuda-runtime-cu12`); CUDA 13's drop it (`nvidia-cuda-runtime` 13.x), so for
those the version says it. cupy names its CUDA in the name too (`cupy-cuda12x`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._wheels import Wheel

_SUFFIXED = re.compile(r"^(?P<base>nvidia-[a-z0-9-]+?)-cu(?P<major>\d+)$")
_CUPY = re.compile(r"^cupy-cuda(?P<major>\d+)x$")
# Components whose version is the CUDA toolkit's own (12.4.127 ships with CUDA 12.4); other
# NVIDIA libraries (cuDNN 9, cuFFT 11, NCCL 2) have versions of their own.
TOOLKIT_COMPONENTS = frozenset({
    "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cuda-cupti", "nvidia-nvjitlink",
    "nvidia-cuda-nvcc", "nvidia-cublas", "nvidia-nvtx", "nvidia-cuda-cccl", "nvidia-cuda-crt",
    "nvidia-nvvm", "nvidia-cuda-sanitizer-api", "nvidia-cuda-opencl", "nvidia-cuda-cuobjdump",
    "nvidia-cuda-nvdisasm", "nvidia-cuda-cuxxfilt", "nvidia-nvml-dev",
})  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class CudaWheel:
    """A locked wheel that carries CUDA libraries, and the CUDA it was built for."""

    wheel: Wheel
    component: str  # the name without its -cuNN suffix
    major: int
    minor: int | None  # known only for toolkit components

    @property
    def cuda(self) -> str:
        return f"{self.major}" if self.minor is None else f"{self.major}.{self.minor}"


def _numbers(version: str) -> tuple[int, int] | None:
    found = re.match(r"^(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else None


def declared_version(declared: str) -> tuple[int, int]:
    """The major and minor of a target's `cuda` ("12" means 12.0)."""
    return _numbers(declared + ".0") or (0, 0)


def classify(wheel: Wheel) -> CudaWheel | None:
    """The CUDA `wheel` carries, or None for a wheel with no CUDA libraries."""
    name = wheel.name.lower().replace("_", "-")
    numbers = _numbers(wheel.version)
    if cupy := _CUPY.match(name):
        return CudaWheel(wheel=wheel, component=name, major=int(cupy["major"]), minor=None)
    if suffixed := _SUFFIXED.match(name):
        component, major = suffixed["base"], int(suffixed["major"])
        minor = numbers[1] if numbers and component in TOOLKIT_COMPONENTS and numbers[0] == major else None
        return CudaWheel(wheel=wheel, component=component, major=major, minor=minor)
    if name in TOOLKIT_COMPONENTS and numbers:
        return CudaWheel(wheel=wheel, component=name, major=numbers[0], minor=numbers[1])
    return None


def cuda_wheels(wheels: Iterable[Wheel]) -> list[CudaWheel]:
    return [found for wheel in wheels if (found := classify(wheel)) is not None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Mismatch:
    found: CudaWheel
    reason: str
    instead: str  # a requirement that fits the declared version


def counterpart(component: str, major: int, minor: int) -> str:
    """The requirement naming `component` for CUDA major.minor (up to the next major)."""
    if component.startswith("cupy-cuda"):
        return f"cupy-cuda{major}x"
    if component not in TOOLKIT_COMPONENTS:
        return f"{component}-cu{major}"  # cuDNN, NCCL and the like keep the suffix
    name = component if major >= 13 else f"{component}-cu{major}"
    return f"{name}=={major}.{minor}.*"


def mismatches(declared: str, wheels: Iterable[Wheel]) -> list[Mismatch]:
    """Wheels built for another CUDA major, or for a newer minor than the target declares
    (those need a newer driver than the declared version promises)."""
    major, minor = declared_version(declared)
    found = []
    for wheel in cuda_wheels(wheels):
        what = f"{wheel.wheel.name} {wheel.wheel.version}"
        if wheel.major != major:
            reason = f"{what} is built for CUDA {wheel.major}"
        elif wheel.minor is not None and wheel.minor > minor:
            reason = f"{what} is CUDA {wheel.cuda}, newer than {declared} (it needs a newer driver)"
        else:
            continue
        found.append(Mismatch(found=wheel, reason=reason, instead=counterpart(wheel.component, major, minor)))
    return found
