"""The wheel carries schemas/ and protos/, and an installed omi-build finds them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from omi_build.build import BuiltImage
from tests.conftest import EXAMPLES, REPO
from tests.integration.conftest import copy_example

pytestmark = pytest.mark.integration


def _uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        pytest.fail("uv is not installed; run `make dev`")
    return uv


def _install_wheel(tmp_path: Path) -> Path:
    """omi-build built as a wheel and installed alone (its declared dependencies only) in a new venv."""
    uv = _uv()
    source = tmp_path / "src"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".venv*", ".git", ".*_cache", "__pycache__", "omi-out")
    )
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "omi_build/_data/schemas/omi.schema.json" in names
    assert "omi_build/_data/protos/model2_template.proto" in names
    assert "omi_build/py.typed" in names

    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "--python", str(venv / "bin/python"), str(wheel)], check=True)
    return venv


def test_installed_wheel_ships_schema_and_protos(tmp_path: Path) -> None:
    venv = _install_wheel(tmp_path)
    tool = venv / "bin" / "omi-build"
    printed = subprocess.run([str(tool), "schema"], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(printed.stdout) == json.loads((REPO / "schemas/omi.schema.json").read_text())
    checked = subprocess.run(
        [str(tool), "validate", str(EXAMPLES / "iris-sklearn")],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert checked.returncode == 0, checked.stderr


def test_a_plain_install_runs_every_command(
    tmp_path: Path, iris_build: tuple[Path, list[BuiltImage]]
) -> None:
    """`pip install .` is the README's install: every module imports with the declared
    dependencies alone, and validate, lock, build and test run on the example (build and
    test from the session's warm cache)."""
    venv = _install_wheel(tmp_path)
    python, tool = venv / "bin" / "python", venv / "bin" / "omi-build"
    every_module = (
        "import importlib, pkgutil, omi_build\n"
        "for m in pkgutil.walk_packages(omi_build.__path__, 'omi_build.'):\n"
        "    if not m.name.endswith('__main__'):  # importing one runs its command\n"
        "        importlib.import_module(m.name)\n"
    )
    subprocess.run([str(python), "-c", every_module], check=True, cwd=tmp_path)
    example = copy_example(tmp_path)
    cache, _ = iris_build
    environment = {**os.environ, "OMI_BUILD_CACHE": str(cache / "cache")}
    environment.pop("SOURCE_DATE_EPOCH", None)
    layout = tmp_path / "layout"
    commands = [
        ["validate", str(example)],
        ["lock", "--check", str(example)],
        ["build", "--locked", "--platform", "linux/amd64", "--output", str(layout), str(example)],
        ["--format", "json", "test", str(layout)],
    ]
    for command in commands:
        done = subprocess.run(
            [str(tool), *command],
            check=False,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=300,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)
