"""Output layouts share no bytes with the cache, and damage in either never yields a clean exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omi_build import image
from omi_build.errors import BuildError, FetchError
from omi_build.layers import Entry, Layer
from omi_build.layers._tar import write
from omi_build.manifest import load
from omi_build.store import Store, sha256_file
from tests.conftest import EXAMPLES
from tests.unit.builders import layer_builder


def _flip(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _images(store: Store) -> list[image.PlatformImage]:
    manifest = load(EXAMPLES / "iris-sklearn")
    entries = [Entry(path="opt/omi/model/w.bin", data=os.urandom(300_000))]
    blob = write(entries, store, compression="gzip", epoch=0)
    layer = Layer(name="weights", blob=blob)
    return [image.assemble(manifest, "linux/amd64", [layer], python="3.11", epoch=0, entry_args=[])]


def _layer_path(layout: Path, images: list[image.PlatformImage]) -> Path:
    return layout / "blobs" / "sha256" / images[0].layers[0].blob.digest.removeprefix("sha256:")


def test_output_blobs_are_copies_not_links_to_the_cache(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    images = _images(store)
    layout = tmp_path / "out"
    image.write_layout(layout, store, images, labels={}, tag="1.0.0")
    output = _layer_path(layout, images)
    cached = store.path_for(images[0].layers[0].blob.digest)
    assert output.stat().st_ino != cached.stat().st_ino
    assert output.stat().st_nlink == 1
    _flip(cached)  # damage in the cache leaves the built image whole
    assert sha256_file(output) == images[0].layers[0].blob.digest.removeprefix("sha256:")


def test_a_damaged_output_blob_is_written_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    images = _images(store)
    layout = tmp_path / "out"
    first = image.write_layout(layout, store, images, labels={}, tag="1.0.0")
    output = _layer_path(layout, images)
    _flip(output)  # same size: a size check would miss it
    config = layout / "blobs" / "sha256" / image.digest_of(images[0].config).removeprefix("sha256:")
    config.write_bytes(config.read_bytes()[:-1] + b" ")
    assert image.write_layout(layout, store, images, labels={}, tag="1.0.0") == first
    assert sha256_file(output) == images[0].layers[0].blob.digest.removeprefix("sha256:")
    assert config.read_bytes() == images[0].config


def test_damage_in_both_fails_instead_of_printing_a_digest(tmp_path: Path) -> None:
    store = Store(Path(tmp_path / "cache"))
    images = _images(store)
    layout = tmp_path / "out"
    image.write_layout(layout, store, images, labels={}, tag="1.0.0")
    _flip(_layer_path(layout, images))
    _flip(store.path_for(images[0].layers[0].blob.digest))
    with pytest.raises(FetchError, match="corrupt"):
        image.write_layout(layout, Store(tmp_path / "cache"), images, labels={}, tag="1.0.0")


def test_an_output_that_cannot_hold_a_layout_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    images = _images(store)
    layout = tmp_path / "out"
    layout.mkdir()
    (layout / "blobs").write_text("not a folder")
    with pytest.raises(BuildError, match="exists and is not a directory"):
        image.write_layout(layout, store, images, labels={}, tag="1.0.0")
    with pytest.raises(BuildError, match="exists and is not a directory"):
        image.write_layout(layout / "blobs", store, images, labels={}, tag="1.0.0")


def test_a_damaged_cached_layer_is_rebuilt_in_the_same_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    entries = [Entry(path="data/x.bin", data=os.urandom(200_000))]
    calls = []

    def build() -> list[Entry]:
        calls.append(1)
        return entries

    def layer() -> Layer:
        with layer_builder(tmp_path / "cache") as builder:
            return builder.layer("data", {"x": 1}, build)

    first = layer()
    assert layer() == first
    assert len(calls) == 1  # reused while whole
    _flip(store.path_for(first.blob.digest))
    assert layer() == first  # same digest, from a fresh build
    assert len(calls) == 2
    assert sha256_file(store.path_for(first.blob.digest)) == first.blob.digest.removeprefix("sha256:")
    (store.root / "layers").joinpath(next(p.name for p in (store.root / "layers").iterdir())).write_text("{")
    assert layer() == first  # a damaged record, too


def test_a_streamed_file_writes_the_same_layer_as_one_held_in_memory(tmp_path: Path) -> None:
    import hashlib  # noqa: PLC0415

    from tests.unit.builders import file_source  # noqa: PLC0415

    data = os.urandom((5 << 20) + 123)  # over a 4 MiB piece, not a multiple of 512
    (tmp_path / "w.bin").write_bytes(data)
    source = file_source(tmp_path, "w.bin", digest="sha256:" + hashlib.sha256(data).hexdigest())
    store = Store(tmp_path / "cache")
    streamed = write([Entry(path="m/w.bin", source=source)], store, compression="gzip", epoch=0)
    held = write([Entry(path="m/w.bin", data=data)], store, compression="gzip", epoch=0)
    assert streamed == held
    # Changed after it was hashed (the last byte flipped: a fixed b"!" left one random file in
    # 256 unchanged, and the test failed on it once).
    (tmp_path / "w.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(BuildError, match="changed while the image was being built"):
        write([Entry(path="m/w.bin", source=source)], store, compression="zstd", epoch=0)


def test_the_protocol_labels_name_each_interfaces_own_protocol() -> None:
    import json  # noqa: PLC0415

    labels = image.oci_annotations(load(EXAMPLES / "iris-sklearn"), 0)
    assert json.loads(labels["ml.openmodel.interfaces"]) == ["kfserving", "modzy"]
    assert json.loads(labels["ml.openmodel.protocols"]) == [["v2"], ["v1"]]
