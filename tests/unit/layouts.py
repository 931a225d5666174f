"""A tiny offline OCI layout (two small layers, two platforms) that layout tests reuse."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omi_build import image
from omi_build.layers import Entry, Layer
from omi_build.layers._tar import write
from omi_build.manifest import load
from omi_build.store import Store
from tests.conftest import EXAMPLES

TAG = "1.0.0"
# The tiny layout's target index: changes only with the tar, gzip, image config or index format
# (or the iris example's metadata, which the annotations carry).
GOLDEN_INDEX = "sha256:3ff9d416ee4bb321a2d1abbab2fb97edfc9dddb179c6af786f2e61cb2db8820c"


def tiny_layout(directory: Path) -> tuple[Path, str, list[image.PlatformImage]]:
    """The layout, its index digest and its images, written into `directory`."""
    store = Store(directory / "cache")
    base = write(
        [Entry(path="etc/os-release", data=b"ID=tiny\n"), Entry(path="usr/bin", kind="dir", mode=0o755)],
        store,
        compression="gzip",
        epoch=0,
    )
    model = write(
        [Entry(path="opt/omi/omi.json", data=b'{"model": {"name": "tiny"}}\n')],
        store,
        compression="gzip",
        epoch=0,
    )
    layers = [Layer(name="base", blob=base), Layer(name="model", blob=model)]
    manifest = load(EXAMPLES / "iris-sklearn")
    images = [
        image.assemble(manifest, platform, layers, python="3.11", epoch=0, entry_args=["serve"])
        for platform in ("linux/amd64", "linux/arm64")
    ]
    layout = directory / "layout"
    digest = image.write_layout(layout, store, images, labels={"test": "tiny"}, tag=TAG)
    return layout, digest, images


def described_layout(directory: Path) -> tuple[Path, str, list[image.PlatformImage]]:
    """The tiny layout with what a build attaches: SBOMs, provenance and a model statement."""
    from omi_build import provenance, sbom  # noqa: PLC0415
    from omi_build.image.layout import INDEX_TYPE, MANIFEST_TYPE, Descriptor, Layout  # noqa: PLC0415

    path, digest, images = tiny_layout(directory)
    layout = Layout.open(path)
    model_dir = directory / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"weights")
    model_files = {"weights.bin": hashlib.sha256(b"weights").hexdigest()}
    for built in images:
        contents = sbom.Contents(
            name="tiny",
            version=TAG,
            platform=built.platform,
            digest=built.digest,
            epoch=0,
            components=(
                sbom.Component(
                    kind="wheel",
                    name="numpy",
                    version="2.1.0",
                    sha256="ab" * 32,
                    file="numpy.whl",
                    licenses=("BSD-3-Clause",),
                ),
            ),
            model_files={f"/opt/omi/model/{p}": d for p, d in model_files.items()},
            runtime_layer=built.layers[-1].blob.digest,
        )
        subject = Descriptor(
            media_type=MANIFEST_TYPE, digest=built.digest, size=len(built.manifest), annotations={}
        )
        layout.attach(subject, sbom.SPDX_TYPE, [(sbom.SPDX_TYPE, sbom.spdx(contents))])
        layout.attach(subject, sbom.CYCLONEDX_TYPE, [(sbom.CYCLONEDX_TYPE, sbom.cyclonedx(contents))])
        statement = provenance.slsa(
            subject=("tiny:1.0.0", built.digest),
            label="//tiny:cpu",
            target="cpu",
            platform=built.platform,
            platforms=["linux/amd64", "linux/arm64"],
            epoch=0,
            manifest_sha256="00" * 32,
            lock_sha256="11" * 32,
            inputs=[provenance.Input(name="numpy.whl", sha256="ab" * 32, uri="pkg:pypi/numpy@2.1.0")],
        )
        layout.attach(
            subject,
            provenance.STATEMENT_TYPE,
            [(provenance.STATEMENT_TYPE, statement)],
            annotations={provenance.PREDICATE_ANNOTATION: provenance.SLSA_PROVENANCE},
        )
    index = layout.target_index()
    layout.attach(
        Descriptor(media_type=INDEX_TYPE, digest=index.digest, size=index.size, annotations={}),
        provenance.STATEMENT_TYPE,
        [(provenance.STATEMENT_TYPE, provenance.model_signing(model_dir, model_files))],
        annotations={provenance.PREDICATE_ANNOTATION: provenance.MODEL_SIGNING},
    )
    return path, digest, images
