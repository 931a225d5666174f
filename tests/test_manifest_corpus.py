"""Scenario directories: each invalid manifest's exact error text, and every valid one.

Refresh the golden files with `make update-golden`, then review the diff.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from omi_build.cli import main
from omi_build.manifest import load
from tests.conftest import CORPUS, EXAMPLES, corpus_package

INVALID = sorted(p for p in (CORPUS / "invalid").iterdir() if p.is_dir())
VALID = sorted(p for p in (CORPUS / "valid").iterdir() if p.is_dir())
EXAMPLE_DIRS = sorted(p.parent for p in EXAMPLES.glob("*/omi.yaml"))
UPDATE = os.environ.get("OMI_UPDATE_GOLDEN") == "1"


def _validate_in(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.chdir(directory)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", "."], out=out, err=err)
    return code, err.getvalue()


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 40
    sections = {case.name.split("-")[0] for case in INVALID}
    for section in (
        "yaml",
        "yaml11",
        "top",
        "metadata",
        "model",
        "python",
        "system",
        "targets",
        "serving",
        "security",
        "build",
    ):
        assert section in sections, f"no invalid case for {section}"


@pytest.mark.parametrize("case", INVALID, ids=[p.name for p in INVALID])
def test_invalid_manifest_reports_exact_errors(
    case: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, err = _validate_in(corpus_package(case, tmp_path), monkeypatch)
    expected_file = case / "expected.txt"
    if UPDATE:
        expected_file.write_text(err, encoding="utf-8")
    assert code == 2
    assert err == expected_file.read_text(encoding="utf-8")
    for line in err.splitlines()[:-1]:
        file, line_no, col, _rest = line.split(":", 3)
        assert file == "omi.yaml"
        assert int(line_no) >= 1
        assert int(col) >= 1


@pytest.mark.parametrize("case", VALID + EXAMPLE_DIRS, ids=[p.name for p in VALID + EXAMPLE_DIRS])
def test_valid_manifest_loads(case: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = case if case in EXAMPLE_DIRS else corpus_package(case, tmp_path)
    code, err = _validate_in(package, monkeypatch)
    assert (code, err) == (0, "")
    manifest = load(package)
    assert manifest.directory == package.resolve()
    assert manifest.targets
