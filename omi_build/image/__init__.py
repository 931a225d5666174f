"""OCI image config, manifest and index; an OCI image layout on disk; a docker-archive tar.

All JSON is written with sorted keys and compact separators, times come from the source date
epoch, and blobs are named by digest: the same inputs give the same bytes, on any machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omi_build.errors import BuildError
from omi_build.fetch import Store
from omi_build.layers import Layer
from omi_build.manifest import Manifest

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
PYTHON_FLAGS = ("-I", "-u")  # isolated (no PYTHON* variables, no user site), unbuffered logs


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformImage:
    platform: str
    config: bytes
    manifest: bytes
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        os_name, arch, *variant = self.platform.split("/")
        platform: dict[str, str] = {"architecture": arch, "os": os_name}
        if variant:
            platform["variant"] = variant[0]
        elif arch == "arm64":
            platform["variant"] = "v8"
        return {
            "mediaType": MANIFEST_TYPE,
            "digest": self.digest,
            "size": len(self.manifest),
            "platform": platform,
        }


def created(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def oci_annotations(manifest: Manifest, epoch: int) -> dict[str, str]:
    """OCI and Open Model Interface annotations (see PROTOCOLS.md)."""
    meta = manifest.metadata
    # Each interface with the protocol versions it speaks: KServe's Open Inference Protocol v2
    # and Modzy's Open Model Interface v1.
    interfaces, protocols = [], []
    if "oip-v2" in manifest.serving.protocols:
        interfaces.append("kfserving")
        protocols.append(["v2"])
    if "omi-v1" in manifest.serving.protocols:
        interfaces.append("modzy")
        protocols.append(["v1"])
    values = {
        "org.opencontainers.image.title": meta.name,
        "org.opencontainers.image.version": meta.version,
        "org.opencontainers.image.created": created(epoch),
        "org.opencontainers.image.description": meta.description,
        "org.opencontainers.image.authors": ", ".join(meta.authors),
        "org.opencontainers.image.licenses": meta.license or "",
        "ml.openmodel.interfaces": json.dumps(interfaces, separators=(",", ":")),
        "ml.openmodel.protocols": json.dumps(protocols, separators=(",", ":")),
        "ml.openmodel.port": str(manifest.serving.port),
        "ml.openml.model_name": meta.name,
    }
    values.update(dict(manifest.build.labels))
    return {key: value for key, value in values.items() if value}


def assemble(
    manifest: Manifest,
    platform: str,
    layers: list[Layer],
    *,
    python: str,
    epoch: int,
    entry_args: list[str],
) -> PlatformImage:
    """The config and manifest of one platform's image."""
    os_name, arch, *variant = platform.split("/")
    uid = manifest.security.user
    labels = oci_annotations(manifest, epoch)
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": created(epoch),
        "config": {
            "User": f"{uid}:{uid}",
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                f"MODEL_NAME={manifest.metadata.name}",
            ],
            "Entrypoint": [f"/usr/bin/python{python}", *PYTHON_FLAGS, "-m", "omi_runtime"],
            "Cmd": entry_args,
            "WorkingDir": "/opt/omi/model",
            "ExposedPorts": {f"{manifest.serving.port}/tcp": {}},
            "Labels": labels,
            "StopSignal": "SIGTERM",
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.blob.diff_id for layer in layers]},
        "history": [
            {"created": created(epoch), "created_by": f"omi-build: {layer.name}"} for layer in layers
        ],
    }
    if variant or arch == "arm64":
        config["variant"] = variant[0] if variant else "v8"
    config_bytes = canonical(config)
    image_manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": CONFIG_TYPE,
            "digest": digest_of(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": layer.blob.media_type,
                "digest": layer.blob.digest,
                "size": layer.blob.size,
            }
            for layer in layers
        ],
        "annotations": labels,
    }
    return PlatformImage(
        platform=platform,
        config=config_bytes,
        manifest=canonical(image_manifest),
        layers=tuple(layers),
    )


def index(images: list[PlatformImage], labels: dict[str, str]) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [image.descriptor() for image in images],
            "annotations": labels,
        }
    )


_FICLONE = 0x40049409  # Linux's ioctl for a copy-on-write clone (btrfs, XFS, bcachefs)


def _copy(source: Path, destination: Path) -> None:
    """A reflink where the file system has them (instant, no space), else a real copy. Never a
    hard link: the output must not share bytes with the cache, or one damaged cache entry would
    damage every image built from it."""
    import fcntl  # noqa: PLC0415 - POSIX only

    with source.open("rb") as reader, destination.open("wb") as writer:
        try:
            fcntl.ioctl(writer.fileno(), _FICLONE, reader.fileno())
        except OSError:
            shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _intact(path: Path, digest: str) -> bool:
    """Whether the layout already holds the blob, byte for byte (re-hashed, never trusted by size)."""
    if not path.is_file() or path.is_symlink():
        return False
    from omi_build.fetch import sha256_file  # noqa: PLC0415

    return sha256_file(path) == digest.removeprefix("sha256:")


def _place(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        _copy(source, temporary)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = digest_of(data)
    target = blobs / digest.removeprefix("sha256:")
    if not (target.is_file() and not target.is_symlink() and target.read_bytes() == data):
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        temporary.replace(target)
    return digest


def _make_layout_dirs(directory: Path, blobs: Path) -> None:
    for folder in (directory, directory / "blobs", blobs):
        if folder.exists() and not folder.is_dir():
            msg = f"{folder} exists and is not a directory, so no image layout can be written there"
            raise BuildError(msg, hint="remove it, or pass another --output")
    try:
        blobs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot write the image layout to {directory}: {exc.strerror}"
        raise BuildError(msg, hint="check the folder's permissions, or pass another --output") from exc
    if not os.access(blobs, os.W_OK) or not os.access(directory, os.W_OK):
        msg = f"cannot write the image layout to {directory}: permission denied"
        raise BuildError(msg, hint="check the folder's permissions, or pass another --output")


def write_layout(
    directory: Path, store: Store, images: list[PlatformImage], *, labels: dict[str, str], tag: str
) -> str:
    """Write an OCI image layout holding the images and their index; return the index digest.

    Into an existing layout too: every blob it references is re-hashed and written again if
    damaged, so the digest printed is never that of a corrupt layout.
    """
    try:
        return _write_layout(directory, store, images, labels=labels, tag=tag)
    except OSError as exc:
        msg = f"cannot write the image layout to {directory}: {exc.strerror or exc}"
        raise BuildError(msg, hint="check the folder and its free space, or pass another --output") from exc


def _write_layout(
    directory: Path, store: Store, images: list[PlatformImage], *, labels: dict[str, str], tag: str
) -> str:
    blobs = directory / "blobs" / "sha256"
    _make_layout_dirs(directory, blobs)
    for image in images:
        for layer in image.layers:
            target = blobs / layer.blob.digest.removeprefix("sha256:")
            if not _intact(target, layer.blob.digest):  # a damaged earlier blob is written again
                source = store.verified(layer.blob.digest, what=f"layer {layer.name}")
                _place(source, target)
        _write_blob(blobs, image.config)
        _write_blob(blobs, image.manifest)
    index_bytes = index(images, labels)
    index_digest = _write_blob(blobs, index_bytes)
    top = {
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [
            {
                "mediaType": INDEX_TYPE,
                "digest": index_digest,
                "size": len(index_bytes),
                "annotations": {REF_NAME: tag},
            },
            *(
                {
                    **image.descriptor(),
                    "annotations": {REF_NAME: f"{tag}-{image.platform.split('/')[1]}"},
                }
                for image in images
            ),
        ],
    }
    (directory / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    temporary = directory / f".index.json.{os.getpid()}.tmp"
    temporary.write_bytes(canonical(top))
    temporary.replace(directory / "index.json")
    return index_digest


def write_docker_archive(
    path: Path, layout: Path, image: PlatformImage, *, repo_tag: str, epoch: int
) -> None:
    """A tar that `docker load` and `podman load` accept: the image's blobs plus manifest.json."""
    blob_names = [f"blobs/sha256/{layer.blob.digest.removeprefix('sha256:')}" for layer in image.layers]
    config_name = f"blobs/sha256/{digest_of(image.config).removeprefix('sha256:')}"
    manifest_json = canonical([{"Config": config_name, "RepoTags": [repo_tag], "Layers": blob_names}])
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def add(tar: tarfile.TarFile, name: str, data: bytes | None = None, source: Path | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = epoch
        info.mode = 0o644
        info.size = len(data) if data is not None else source.stat().st_size if source else 0
        if data is not None:
            tar.addfile(info, io.BytesIO(data))
        elif source is not None:
            with source.open("rb") as stream:
                tar.addfile(info, stream)

    try:
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
            for directory in ("blobs", "blobs/sha256"):
                info = tarfile.TarInfo(directory)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, epoch
                tar.addfile(info)
            written = set()
            for name in sorted({config_name, *blob_names}):
                source = layout / name
                if not source.is_file():
                    msg = f"{source} is missing from the layout"
                    raise BuildError(msg)
                if name not in written:
                    add(tar, name, source=source)
                    written.add(name)
            add(tar, "manifest.json", manifest_json)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
