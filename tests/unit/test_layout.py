"""The layout's one reader and its referrers, on the tiny offline layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omi_build.errors import LayoutError
from omi_build.image import INDEX_TYPE, REF_NAME, Layout
from omi_build.image.layout import Descriptor

from .layouts import GOLDEN_INDEX, TAG, tiny_layout

SBOM_TYPE = "application/spdx+json"


def test_the_tiny_layout_has_its_golden_digest(tmp_path: Path) -> None:
    _, digest, _ = tiny_layout(tmp_path)
    assert digest == GOLDEN_INDEX


def test_the_reader_finds_the_target_and_each_platform(tmp_path: Path) -> None:
    directory, digest, images = tiny_layout(tmp_path)
    layout = Layout.open(directory)
    assert layout.tags() == [TAG]
    assert layout.target_index().digest == digest
    assert [image.architecture for image in layout.images()] == ["amd64", "arm64"]
    amd64 = layout.image("amd64")
    assert amd64.digest == images[0].digest
    assert layout.ref_of(amd64) == f"{TAG}-amd64"
    assert layout.file(amd64, "opt/omi/omi.json") == b'{"model": {"name": "tiny"}}\n'
    assert layout.file(amd64, "etc/os-release") == b"ID=tiny\n"
    assert layout.file(amd64, "no/such/file") is None
    with pytest.raises(LayoutError, match="no image for linux/riscv64"):
        layout.image("riscv64")
    with pytest.raises(LayoutError, match=r"no image index tagged 2\.0"):
        layout.target_index("2.0")


def test_a_damaged_blob_is_an_error_never_data(tmp_path: Path) -> None:
    directory, _, _ = tiny_layout(tmp_path)
    layout = Layout.open(directory)
    config = layout.image("amd64").manifest["config"]["digest"]
    path = layout.blob_path(config)
    path.write_bytes(path.read_bytes().replace(b"amd64", b"arm64"))
    with pytest.raises(LayoutError, match="damaged"):
        layout.blob(config)


def test_what_is_not_a_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="is not an OCI image layout"):
        Layout.open(tmp_path)
    (tmp_path / "oci-layout").write_text('{"imageLayoutVersion": "9"}')
    (tmp_path / "index.json").write_text('{"manifests": []}')
    with pytest.raises(LayoutError, match=r"version 1\.0\.0"):
        Layout.open(tmp_path)


def test_an_attached_referrer_changes_no_image_or_index_digest(tmp_path: Path) -> None:
    directory, digest, images = tiny_layout(tmp_path)
    layout = Layout.open(directory)
    before = {d.digest for d in layout.descriptors}
    amd64 = layout.image("amd64")
    sbom = b'{"spdxVersion": "SPDX-2.3"}'
    attached = layout.attach(
        amd64.descriptor, SBOM_TYPE, [(SBOM_TYPE, sbom)], annotations={"org.example.kind": "sbom"}
    )
    again = Layout.open(directory)
    assert again.target_index().digest == digest  # the index and images are untouched
    assert again.image("amd64").digest == images[0].digest
    assert {d.digest for d in again.descriptors} == before | {attached.digest}
    assert again.referrers(amd64.digest) == [attached]
    assert again.referrers(amd64.digest, artifact_type="other") == []
    assert again.referrers(images[1].digest) == []
    manifest = again.json_blob(attached.digest)
    assert manifest["subject"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": amd64.digest,
        "size": amd64.descriptor.size,
    }
    assert manifest["artifactType"] == SBOM_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert again.blob(manifest["layers"][0]["digest"]) == sbom
    assert again.blob(manifest["config"]["digest"]) == b"{}"
    # attaching the same artifact again lists it once; the index can be a subject too
    again.attach(amd64.descriptor, SBOM_TYPE, [(SBOM_TYPE, sbom)], annotations={"org.example.kind": "sbom"})
    target = again.target_index()
    on_index = again.attach(target, "application/vnd.dev.sigstore.bundle.v0.3+json", [])
    top = json.loads((directory / "index.json").read_text())
    assert [d["digest"] for d in top["manifests"]].count(attached.digest) == 1
    assert Layout.open(directory).referrers(target.digest) == [on_index]
    assert isinstance(target, Descriptor)
    assert target.media_type == INDEX_TYPE
    assert target.annotations[REF_NAME] == TAG


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_files_are_read_from_layers_of_many_pieces(tmp_path: Path, compression: str) -> None:
    """A layer over 4 MiB is several gzip members or zstd frames; the reader streams them all."""
    import os  # noqa: PLC0415

    from omi_build import image  # noqa: PLC0415
    from omi_build.layers import Entry, Layer  # noqa: PLC0415
    from omi_build.layers._tar import write  # noqa: PLC0415
    from omi_build.manifest import load  # noqa: PLC0415
    from omi_build.store import Store  # noqa: PLC0415
    from tests.conftest import EXAMPLES  # noqa: PLC0415

    store = Store(tmp_path / "cache")
    weights = os.urandom(9 << 20)
    entries = [Entry(path="a/weights.bin", data=weights), Entry(path="z/config.json", data=b"{}")]
    blob = write(entries, store, compression=compression, epoch=0)  # type: ignore[arg-type]
    built = image.assemble(
        load(EXAMPLES / "iris-sklearn"), "linux/amd64", [Layer(name="big", blob=blob)],
        python="3.11", epoch=0, entry_args=[],
    )  # fmt: skip
    image.write_layout(tmp_path / "layout", store, [built], labels={}, tag=TAG)
    layout = Layout.open(tmp_path / "layout")
    amd64 = layout.image("amd64")
    assert layout.file(amd64, "z/config.json") == b"{}"
    assert layout.file(amd64, "a/weights.bin") == weights
