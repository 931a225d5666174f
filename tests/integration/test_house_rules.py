"""The house rules are executable: import-linter fails when the runtime reaches the builder or a
stage imports one above it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _lint_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "omi_build", copy / "omi_build", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}\n")
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache"], cwd=copy, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "omi_build/runtime/_limits.py",
            "from omi_build import settings",
            "runtime never imports the builder",
        ),
        (
            "omi_build/runtime/_oip.py",
            "from omi_build.image import layout",
            "runtime never imports the builder",
        ),
        ("omi_build/store/__init__.py", "from omi_build import api", "stages import only the stages below"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(tmp_path: Path, module: str, line: str, contract: str) -> None:
    done = _lint_with(tmp_path, module, line)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{contract}" in done.stdout
    assert "BROKEN" in done.stdout


def test_the_tree_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    done = _lint_with(tmp_path, "omi_build/errors.py", "# nothing added")
    assert done.returncode == 0, done.stdout + done.stderr
