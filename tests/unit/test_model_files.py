"""Model files: a big file is a layer of its own, read once when it changed, never when not."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from omi_build import layers
from omi_build.errors import BuildError
from omi_build.layers import file_groups
from omi_build.store import StatCache
from tests.unit.builders import layer_builder

MIB = 1 << 20
LONG_AGO_NS = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 1


@pytest.fixture(autouse=True)
def _small_big_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layers, "BIG_FILE_BYTES", MIB)


def _package(tmp_path: Path) -> Path:
    """Data files only: code would start the image's Python to compile it (integration's job)."""
    package = tmp_path / "model"
    package.mkdir()
    for name, data in {
        "config.json": b"{}",
        "a.bin": os.urandom(2 * MIB),
        "b.bin": os.urandom(MIB + 5),
    }.items():
        (package / name).write_bytes(data)
        os.utime(package / name, ns=(LONG_AGO_NS, LONG_AGO_NS))
    return package


def test_small_files_share_a_layer_and_big_ones_get_their_own() -> None:
    sizes = {"config.json": 2, "tokenizer.json": 10, "b.bin": 3 * MIB, "a.bin": 2 * MIB}
    assert file_groups(sizes) == [("config.json", "tokenizer.json"), ("a.bin",), ("b.bin",)]
    many = {f"shard-{i:03}.bin": 2 * MIB for i in range(40)}  # past MAX_FILE_LAYERS: neighbours share
    groups = file_groups(many)
    assert len(groups) <= layers.MAX_FILE_LAYERS
    assert sorted(name for group in groups for name in group) == sorted(many)


def test_a_changed_big_file_is_read_once_and_its_layer_equals_a_built_one(tmp_path: Path) -> None:
    package = _package(tmp_path)
    names = sorted(p.name for p in package.iterdir())
    known = StatCache(tmp_path / "stats.json")
    with layer_builder(tmp_path / "cache") as builder:
        found = builder.model_files(package, names, known=known)
        assert set(found.built) == {("a.bin",), ("b.bin",)}  # hashed while their layers were written
        expected = {n: "sha256:" + hashlib.sha256((package / n).read_bytes()).hexdigest() for n in names}
        assert found.digests == expected
        one_pass = builder.model(package, found, b"{}", uid=65532)
    with layer_builder(tmp_path / "other-cache") as builder:
        found = builder.model_files(package, names, known=StatCache(None), one_pass=False)
        assert not found.built
        two_passes = builder.model(package, found, b"{}", uid=65532)
    assert [layer.blob for layer in one_pass] == [layer.blob for layer in two_passes]
    assert [layer.name for layer in one_pass] == [
        "model code", "model files", "model file a.bin", "model file b.bin", "serving config",
    ]  # fmt: skip


def test_an_unchanged_file_is_not_read_and_a_changed_one_rebuilds_only_its_layer(tmp_path: Path) -> None:
    package = _package(tmp_path)
    names = sorted(p.name for p in package.iterdir())
    known = StatCache(tmp_path / "stats.json")
    with layer_builder(tmp_path / "cache") as builder:
        first = builder.model(package, builder.model_files(package, names, known=known), b"{}", uid=1)
        again = builder.model_files(package, names, known=known)
        assert not again.built  # every digest known by stat: no file read
        assert builder.model(package, again, b"{}", uid=1) == first
        with (package / "b.bin").open("r+b") as handle:
            handle.write(b"!")
        changed = builder.model_files(package, names, known=known)
        assert set(changed.built) == {("b.bin",)}
        layers_now = builder.model(package, changed, b"{}", uid=1)
    differing = [new.name for old, new in zip(first, layers_now, strict=True) if old.blob != new.blob]
    assert differing == ["model file b.bin"]  # the config layer here is the same b"{}"


def test_auto_stores_a_big_file_that_does_not_compress_in_a_plain_tar_layer(tmp_path: Path) -> None:
    package = _package(tmp_path)
    (package / "text.bin").write_bytes(b"weights that compress well " * 80_000)  # 2 MB of text
    names = sorted(p.name for p in package.iterdir())
    with layer_builder(tmp_path / "cache", compression="auto") as b:
        built = b.model(package, b.model_files(package, names, known=StatCache(None)), b"{}", uid=1)
    by_name = {layer.name: layer.blob for layer in built}
    plain = by_name["model file a.bin"]
    assert plain.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert plain.digest == plain.diff_id  # the blob is the tar
    assert plain.size == plain.uncompressed_size
    assert by_name["model file text.bin"].media_type.endswith("tar+gzip")  # it compresses
    assert by_name["model files"].media_type.endswith("tar+gzip")  # small files: gzip as ever


def test_a_big_file_replaced_after_auto_sampled_it_fails_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "auto" picks a big file's codec from samples of it; a file swapped in before it is read
    (another inode, same bytes even) is not the file sampled: the build stops, as for a file
    that changes while it is read."""
    package = _package(tmp_path)
    names = sorted(p.name for p in package.iterdir())
    sampling = layers.LayerBuilder._file_codec

    def sample_then_swap(
        self: layers.LayerBuilder, directory: Path, group: tuple[str, ...], **kw: bool
    ) -> object:
        found = sampling(self, directory, group, **kw)
        for name in group:
            (directory / f"{name}.new").write_bytes((directory / name).read_bytes())
            (directory / f"{name}.new").replace(directory / name)
        return found

    monkeypatch.setattr(layers.LayerBuilder, "_file_codec", sample_then_swap)
    with (
        layer_builder(tmp_path / "cache", compression="auto") as b,
        pytest.raises(BuildError, match=r"\.bin changed while the image was being built"),
    ):
        b.model_files(package, names, known=StatCache(None))
