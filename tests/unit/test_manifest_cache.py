"""The validation cache: reused while nothing it depends on changed, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omi_build import manifest as manifest_package
from omi_build.errors import ManifestError
from omi_build.manifest import load_cached
from tests.conftest import EXAMPLES


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    copy = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris-sklearn", copy, ignore=shutil.ignore_patterns("omi-out"))
    return copy


def _entries(cache: Path) -> int:
    return len(list(cache.glob("*.json")))


def test_weights_change_reuses_the_entry_but_code_change_does_not(iris: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = load_cached(iris, cache)
    (iris / "model.npz").write_bytes(b"new weights")
    assert load_cached(iris, cache) == first
    assert _entries(cache) == 1
    (iris / "model.py").write_text("class Other:\n    pass\n")
    with pytest.raises(ManifestError) as exc:
        load_cached(iris, cache)
    assert "defines no class 'IrisModel'" in str(exc.value.issues[0])


def test_a_deleted_file_is_noticed(iris: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_cached(iris, cache)
    (iris / "model.npz").unlink()
    with pytest.raises(ManifestError) as exc:
        load_cached(iris, cache)
    assert "matches no file" in str(exc.value.issues[0])


def test_a_valid_code_change_reruns_only_the_checks_that_read_files(
    iris: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = load_cached(iris, cache)

    def full_validation(*_: object) -> None:
        msg = "the schema and every check ran again"
        raise AssertionError(msg)

    monkeypatch.setattr(manifest_package, "_load", full_validation)
    with (iris / "model.py").open("a") as source:
        source.write("\n# a comment: still the same class with predict\n")
    assert load_cached(iris, cache) == first
    assert load_cached(iris, cache) == first  # the entry now records the new model.py
