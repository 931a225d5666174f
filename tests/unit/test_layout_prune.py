"""A rebuild into a layout leaves only what its index reaches, never under a reader's feet."""

from __future__ import annotations

import json
from pathlib import Path

from omi_build import image
from omi_build.image.layout import Layout, prune_unreferenced, referenced
from omi_build.layers import Entry, Layer
from omi_build.layers._tar import write
from omi_build.manifest import load
from omi_build.store import Store
from tests.conftest import EXAMPLES
from tests.unit.layouts import TAG, described_layout, tiny_layout


def _blobs(layout: Path) -> set[str]:
    return {path.name for path in (layout / "blobs" / "sha256").iterdir()}


def _rebuild_with_other_model(directory: Path, layout: Path) -> set[str]:
    """Write another image into the layout (as a build whose model changed does)."""
    store = Store(directory / "cache")
    model = write(
        [Entry(path="opt/omi/omi.json", data=b'{"model": "changed"}\n')], store, compression="gzip", epoch=0
    )
    base = write([Entry(path="etc/os-release", data=b"ID=tiny\n")], store, compression="gzip", epoch=0)
    images = [
        image.assemble(
            load(EXAMPLES / "iris-sklearn"),
            "linux/amd64",
            [Layer(name="base", blob=base), Layer(name="model", blob=model)],
            python="3.11",
            epoch=0,
            entry_args=["serve"],
        )
    ]
    with image.writing(layout):
        image.write_layout(layout, store, images, labels={}, tag=TAG)
    return {model.digest.removeprefix("sha256:"), base.digest.removeprefix("sha256:")}


def test_everything_the_index_reaches_is_found(tmp_path: Path) -> None:
    layout, _, _ = described_layout(tmp_path)
    assert referenced(layout) == _blobs(layout)  # SBOMs and statements, their configs too


def test_a_rebuild_removes_what_the_new_index_does_not_name(tmp_path: Path) -> None:
    layout, _, _ = described_layout(tmp_path)
    before = _blobs(layout)
    (layout / "blobs" / "sha256" / "notes.txt").write_text("not a blob: left alone")
    new_layers = _rebuild_with_other_model(tmp_path, layout)
    with image.writing(layout):
        removed, freed = prune_unreferenced(layout)
    after = _blobs(layout)
    assert new_layers <= after
    assert after == (referenced(layout) or set()) | {"notes.txt"}
    assert removed == len(before - after) > 0
    assert freed > 0
    Layout.open(layout).images()  # what is left is a whole layout


def test_nothing_goes_while_a_reader_holds_the_layout(tmp_path: Path) -> None:
    layout, _, _ = tiny_layout(tmp_path)
    reader = Layout.open(layout)  # an omi-build command that read the old index
    old = _blobs(layout)
    _rebuild_with_other_model(tmp_path, layout)
    with image.writing(layout):
        assert prune_unreferenced(layout) == (0, 0)
    assert old <= _blobs(layout)
    reader.close()
    with image.writing(layout):
        assert prune_unreferenced(layout)[0] > 0


def test_a_damaged_document_removes_nothing(tmp_path: Path) -> None:
    layout, _, images = tiny_layout(tmp_path)
    _rebuild_with_other_model(tmp_path, layout)
    manifest_blob = (
        layout
        / "blobs"
        / "sha256"
        / json.loads((layout / "index.json").read_text())["manifests"][0]["digest"].removeprefix("sha256:")
    )
    manifest_blob.write_text("{not json")
    before = _blobs(layout)
    with image.writing(layout):
        assert prune_unreferenced(layout) == (0, 0)
    assert _blobs(layout) == before
    (layout / "index.json").write_text("[")
    assert referenced(layout) is None
    assert images  # the first layout's images were real
