"""A tiny offline OCI layout (two small layers, two platforms) that layout tests reuse."""

from __future__ import annotations

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
