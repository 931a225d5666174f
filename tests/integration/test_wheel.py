"""The wheel carries schemas/ and protos/, and an installed omi-build finds them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO

pytestmark = pytest.mark.integration


def _uv() -> str:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        pytest.fail("uv is not installed; run `make dev`")
    return uv


def test_installed_wheel_ships_schema_and_protos(tmp_path: Path) -> None:
    uv = _uv()
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "*cache*", "__pycache__"))
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
