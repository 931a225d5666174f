"""The arm64 image of the iris example runs for real on this amd64 machine, under qemu-user
(Debian's qemu-user-static, copied into the runc bundle): it starts, reports SERVING and
answers every example over both protocols; and every ELF file in it is aarch64."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from omi_build import api, engine
from omi_build.build import BuiltImage
from omi_build.platforms import host_machine

from .conftest import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(host_machine() != "amd64", reason="emulates arm64 on an amd64 host"),
]

_EM_AARCH64, _EM_X86_64 = 183, 62


def _machines(root: Path) -> dict[int, list[str]]:
    """e_machine of every ELF file below `root`, with the files that have it."""
    found: dict[int, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as handle:
            head = handle.read(20)
        if head[:4] == b"\x7fELF" and len(head) == 20:
            machine = struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])[0]
            found.setdefault(machine, []).append(str(path.relative_to(root)))
    return found


def test_the_arm64_image_serves_its_examples_under_qemu(iris_build: tuple[Path, list[BuiltImage]]) -> None:
    _, images = iris_build
    assert {i.platform for i in images} == {"linux/amd64", "linux/arm64"}  # one index, both
    outcomes = api.run_examples(str(images[0].layout), port=free_port(), platform="linux/arm64")
    assert {o.protocol for o in outcomes} >= {"oip-v2", "omi-v1"}
    assert all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]


def test_every_elf_file_of_the_arm64_image_is_aarch64(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    _, images = iris_build
    layout = images[0].layout
    ref = engine._resolve_ref(layout, "arm64")  # the same ref run uses
    bundle = engine.runc_bundle(layout, ref, tmp_path, port=free_port())
    machines = _machines(bundle / "rootfs")
    assert set(machines) == {_EM_AARCH64}, {m: files[:3] for m, files in machines.items()}
    assert len(machines[_EM_AARCH64]) > 50  # python, the C libraries, numpy's and grpc's extensions
    shutil.rmtree(bundle)
