"""Up to date: the last answer comes back only while every input and output file is as it was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from omi_build import uptodate, workspace
from omi_build.outcome import BuiltImage, BuiltTarget, Result
from omi_build.store import Store
from tests.conftest import EXAMPLES

LONG_AGO_NS = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 7


def _setup(tmp_path: Path) -> tuple[Store, workspace.Selection, Path, BuiltTarget]:
    package = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris-sklearn", package, ignore=shutil.ignore_patterns("omi-out"))
    for path in package.iterdir():
        os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))  # settled: the stat cache may trust them
    store = Store(tmp_path / "cache")
    (selection,) = workspace.resolve([str(package)], tmp_path)
    directory = tmp_path / "out"
    (directory / "blobs" / "sha256").mkdir(parents=True)
    (directory / "oci-layout").write_text("{}")
    (directory / "index.json").write_text("{}")
    (directory / "blobs" / "sha256" / ("a" * 64)).write_bytes(b"layer")
    (tmp_path / "out.amd64.spdx.json").write_text("{}")
    image = BuiltImage(
        label="//iris:cpu", target="cpu", platform="linux/amd64", digest="sha256:" + "b" * 64,
        index="sha256:" + "c" * 64, layout=directory, size=10, compressed_size=5,
    )  # fmt: skip
    built = BuiltTarget(
        label="//iris:cpu", target="cpu", layout=directory, index=image.index, images=(image,),
        policy=(Result(rule="user", platform="", checked="security.user", found="uid 65532"),),
    )  # fmt: skip
    digests = uptodate.model_digests(selection, store) or {}
    if not digests:  # first sight of the files: hashed into the stat cache, as a build does
        from omi_build.layers import model_file_digests  # noqa: PLC0415

        model_file_digests(package, selection.manifest.model.files, known=store.stats(package))
        digests = uptodate.model_digests(selection, store) or {}
    uptodate.remember(store, selection, "cpu", directory, uptodate.options_of(None, False), digests, built)
    return store, selection, directory, built


def test_nothing_changed_gives_the_last_answer(tmp_path: Path) -> None:
    store, selection, directory, built = _setup(tmp_path)
    assert uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of(None, False)) == built


def _relink(package: Path) -> None:
    (package / "model.npz").unlink()
    (package / "model.npz").symlink_to("/etc/hostname")  # the pipeline then refuses it by name


class Where(NamedTuple):
    package: Path
    out: Path
    tmp: Path


# Each change, made to the package, the output directory or the scratch folder around them.
CHANGES = {
    "model file touched": lambda w: os.utime(w.package / "model.npz"),  # same bytes, hashed again
    "manifest edited": lambda w: (w.package / "omi.yaml").write_text(
        (w.package / "omi.yaml").read_text() + "\n"
    ),
    "lock removed": lambda w: (w.package / "omi.lock").unlink(),
    "blob removed": lambda w: (w.out / "blobs" / "sha256" / ("a" * 64)).unlink(),
    "blob rewritten": lambda w: (w.out / "blobs" / "sha256" / ("a" * 64)).write_bytes(b"LAYER"),
    "index replaced": lambda w: (w.out / "index.json").write_text("{}"),
    "sbom beside removed": lambda w: (w.tmp / "out.amd64.spdx.json").unlink(),
    "record damaged": lambda w: next((w.tmp / "cache" / "stats").glob("build-*.json")).write_text("{"),
    "link swapped in": lambda w: _relink(w.package),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_sends_the_build_down_the_pipeline(tmp_path: Path, change: str) -> None:
    store, selection, directory, _ = _setup(tmp_path)
    time.sleep(0.01)
    CHANGES[change](Where(selection.manifest.directory, directory, tmp_path))
    assert uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of(None, False)) is None


def test_other_options_or_environment_are_other_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, selection, directory, built = _setup(tmp_path)
    assert (
        uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of("linux/arm64", False)) is None
    )
    assert uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of(None, True)) is None
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    assert uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of(None, False)) is None
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert uptodate.fresh(store, selection, "cpu", directory, uptodate.options_of(None, False)) == built
