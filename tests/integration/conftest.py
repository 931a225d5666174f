"""Fixtures that build the iris example for real: Debian packages, wheels, OCI layouts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from omi_build import api, engine
from omi_build.build import BuiltImage, BuiltTarget
from tests.conftest import EXAMPLES


def copy_example(directory: Path) -> Path:
    target = directory / "iris-sklearn"
    shutil.copytree(
        EXAMPLES / "iris-sklearn", target, ignore=shutil.ignore_patterns("omi-out", "__pycache__")
    )
    return target


def build_in(directory: Path, monkeypatch: pytest.MonkeyPatch, **options: object) -> list[BuiltImage]:
    """Build the example copied into `directory`, with a cache of its own."""
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    example = (
        copy_example(directory) if not (directory / "iris-sklearn").exists() else directory / "iris-sklearn"
    )
    return images_of(api.build([str(example)], output=directory / "out", **options))  # type: ignore[arg-type]


def images_of(built: list[BuiltTarget]) -> list[BuiltImage]:
    """Every platform's image of every target built, in order."""
    return [image for target in built for image in target.images]


@pytest.fixture(scope="session")
def iris_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[BuiltImage]]:
    """The example built once for the session, both platforms, from an empty cache."""
    directory = tmp_path_factory.mktemp("first")
    with pytest.MonkeyPatch.context() as monkeypatch:
        images = build_in(directory, monkeypatch)
    return directory, images


def run_in_runc(layout: Path, ref: str, args: list[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run `args` in an image with runc, in the bundle `omi-build run` makes (read-only root,
    no capabilities, the seccomp filter), as the image's user."""
    work = workdir / f"run-{uuid.uuid4().hex[:8]}"
    bundle = engine.runc_bundle(layout, ref, work, port=free_port(), args=args)
    name = f"omi-test-{uuid.uuid4().hex[:12]}"
    try:
        return subprocess.run(
            ["runc", "run", name],
            cwd=bundle,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _client_venv(root: Path, name: str, requirements: list[str]) -> Path:
    """A virtual environment holding one third-party client (they pin clashing protobufs)."""
    venv = root / name
    python = venv / "bin" / "python"
    if not python.exists():
        uv = Path(sys.executable).with_name("uv")
        subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run([str(uv), "pip", "install", "-q", "--python", str(python), *requirements], check=True)
    return python


@pytest.fixture(scope="session")
def triton_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python with tritonclient[grpc] from PyPI: a real OIP v2 client."""
    return _client_venv(tmp_path_factory.mktemp("clients"), "triton", ["tritonclient[grpc]", "numpy"])


@pytest.fixture(scope="session")
def chassis_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python with chassisml 1.5.0 from PyPI: the OMI reference client (OMIClient)."""
    return _client_venv(tmp_path_factory.mktemp("clients"), "chassis", ["chassisml==1.5.0"])
