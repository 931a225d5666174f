"""What the build knows of each image, recorded beside it: SBOMs (SPDX, CycloneDX) and SLSA
provenance attached to each platform image, and the model files' model-signing statement
attached to the target's index; each also written next to the layout folder for tools that
read files. Unsigned: `omi-build sign` signs them. None of it changes an image's digest.
"""

from __future__ import annotations

from omi_build import atomic, layers, provenance, sbom
from omi_build import lock as locking
from omi_build.digests import digest_of
from omi_build.image import PlatformImage
from omi_build.image.layout import INDEX_TYPE, MANIFEST_TYPE, Descriptor, Layout
from omi_build.lock import Lock
from omi_build.manifest import Manifest


def _components(entry: locking.PlatformLock, built: PlatformImage) -> tuple[sbom.Component, ...]:
    """The image's packages as the lock pins them, with the licences their layers recorded."""
    licenses = {c.sha256: c.licenses for layer in built.layers for c in layer.inventory}
    return (
        *(
            sbom.Component(
                kind="deb",
                name=p.name,
                version=p.version,
                sha256=p.sha256,
                file=p.filename,
                licenses=licenses.get(p.sha256, ()),
                architecture=p.architecture,
            )
            for p in entry.debian
        ),
        *(
            sbom.Component(
                kind="wheel",
                name=w.name,
                version=w.version,
                sha256=w.sha256,
                file=w.filename,
                licenses=licenses.get(w.sha256, ()),
            )
            for w in entry.wheels
        ),
    )


def attach(
    layout: Layout,
    images: list[PlatformImage],
    *,
    manifest: Manifest,
    lock: Lock,
    target: str,
    label: str,
    digests: dict[str, str],
    epoch: int,
) -> None:
    """Attach the SBOMs, provenance and model statement of a target just built (see the module)."""
    manifest_sha = digest_of(manifest.path.read_bytes()).removeprefix("sha256:")
    lock_sha = digest_of(locking.lock_path(manifest).read_bytes()).removeprefix("sha256:")
    name = f"{manifest.metadata.name}:{manifest.metadata.version}"
    platforms = [i.platform for i in images]
    model_files = {path: sha.removeprefix("sha256:") for path, sha in digests.items()}
    for built in images:
        entry = lock.platform(target, built.platform)
        components = _components(entry, built)
        runtime = next(layer.blob.digest for layer in built.layers if layer.name == layers.RUNTIME_LAYER)
        contents = sbom.Contents(
            name=manifest.metadata.name, version=manifest.metadata.version, platform=built.platform,
            digest=built.digest, epoch=epoch, components=components,
            model_files={f"/{layers.MODEL_DIR}/{path}": sha for path, sha in model_files.items()},
            runtime_layer=runtime,
        )  # fmt: skip
        statement = provenance.slsa(
            subject=(name, built.digest), label=label, target=target, platform=built.platform,
            platforms=platforms, epoch=epoch, manifest_sha256=manifest_sha, lock_sha256=lock_sha,
            inputs=[provenance.Input(name=c.file, sha256=c.sha256, uri=c.purl) for c in components]
            + [provenance.Input(name=f"model/{p}", sha256=sha) for p, sha in model_files.items()],
        )  # fmt: skip
        subject = Descriptor(
            media_type=MANIFEST_TYPE, digest=built.digest, size=len(built.manifest), annotations={}
        )
        arch = built.platform.split("/")[1]
        for media_type, data, suffix in (
            (sbom.SPDX_TYPE, sbom.spdx(contents), "spdx.json"),
            (sbom.CYCLONEDX_TYPE, sbom.cyclonedx(contents), "cdx.json"),
        ):
            layout.attach(subject, media_type, [(media_type, data)])
            _beside(layout, f"{arch}.{suffix}", data)
        layout.attach(
            subject,
            provenance.STATEMENT_TYPE,
            [(provenance.STATEMENT_TYPE, statement)],
            annotations={provenance.PREDICATE_ANNOTATION: provenance.SLSA_PROVENANCE},
        )
        _beside(layout, f"{arch}.provenance.json", statement)
    model = provenance.model_signing(manifest.directory, model_files)
    index = layout.target_index(manifest.metadata.version)
    layout.attach(
        Descriptor(media_type=INDEX_TYPE, digest=index.digest, size=index.size, annotations={}),
        provenance.STATEMENT_TYPE,
        [(provenance.STATEMENT_TYPE, model)],
        annotations={provenance.PREDICATE_ANNOTATION: provenance.MODEL_SIGNING},
    )


def _beside(layout: Layout, suffix: str, data: bytes) -> None:
    """`<layout>.<suffix>` next to the layout folder (the layout holds only what OCI defines)."""
    atomic.write_bytes(layout.directory.with_name(f"{layout.directory.name}.{suffix}"), data)
