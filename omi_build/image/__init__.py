"""OCI image config, manifest and index; an OCI image layout on disk; a docker-archive tar.

All JSON is written with sorted keys and compact separators, times come from the source date
epoch, and blobs are named by digest: the same inputs give the same bytes, on any machine.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omi_build import atomic
from omi_build.digests import canonical, digest_of
from omi_build.errors import BuildError
from omi_build.layers import Layer
from omi_build.manifest import Manifest

from .layout import (
    CONFIG_TYPE,
    INDEX_TYPE,
    MANIFEST_TYPE,
    REF_NAME,
    Image,
    Layout,
    index,
    prune_unreferenced,
    write_layout,
    writing,
)

__all__ = [
    "CONFIG_TYPE",
    "INDEX_TYPE",
    "MANIFEST_TYPE",
    "REF_NAME",
    "Layout",
    "PlatformImage",
    "assemble",
    "canonical",
    "digest_of",
    "index",
    "oci_annotations",
    "prune_unreferenced",
    "write_docker_archive",
    "write_docker_archive_of",
    "write_layout",
    "writing",
]  # fmt: skip

PYTHON_FLAGS = ("-I", "-u")  # isolated (no PYTHON* variables, no user site), unbuffered logs


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


def oci_annotations(manifest: Manifest, epoch: int, *, target: str | None = None) -> dict[str, str]:
    """OCI and Open Model Interface annotations (see PROTOCOLS.md), and the hardware a
    target's image is for."""
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
    if target is not None:
        spec = manifest.target(target)
        values["ml.openmodel.accelerator"] = spec.accelerator
        values["ml.openmodel.cuda"] = spec.cuda or ""
    values.update(dict(manifest.build.labels))
    return {key: value for key, value in values.items() if value}


# Where GPU device plugins that mount the driver into a folder (GKE's) put its libraries; the
# NVIDIA container toolkit puts them on the default search path instead.
DRIVER_LIBRARY_DIRS = ("/usr/local/nvidia/lib64",)


def cuda_environment(cuda: str, layers: list[Layer]) -> list[str]:
    """What GPU runtimes read from a CUDA image: the NVIDIA container toolkit mounts the driver
    for the devices and capabilities named here and refuses a driver older than the CUDA
    required; the dynamic loader finds the wheels' libraries (both layouts) on the path."""
    folders = sorted({"/" + folder for layer in layers for folder in layer.facts.libraries})
    return [
        "NVIDIA_VISIBLE_DEVICES=all",
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
        f"NVIDIA_REQUIRE_CUDA=cuda>={cuda}",
        "LD_LIBRARY_PATH=" + ":".join([*folders, *DRIVER_LIBRARY_DIRS]),
    ]


def assemble(
    manifest: Manifest,
    platform: str,
    layers: list[Layer],
    *,
    python: str,
    epoch: int,
    entry_args: list[str],
    target: str | None = None,
) -> PlatformImage:
    """The config and manifest of one platform's image."""
    os_name, arch, *variant = platform.split("/")
    uid = manifest.security.user
    labels = oci_annotations(manifest, epoch, target=target)
    environment = [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "LANG=C.UTF-8",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        f"MODEL_NAME={manifest.metadata.name}",
    ]
    if target is not None and manifest.target(target).accelerator == "cuda":
        environment += cuda_environment(manifest.target(target).cuda or "", layers)
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": created(epoch),
        "config": {
            "User": f"{uid}:{uid}",
            "Env": environment,
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


def write_docker_archive(
    path: Path, layout: Path, image: PlatformImage, *, repo_tag: str, epoch: int
) -> None:
    """A tar that `docker load` and `podman load` accept: the image's blobs plus manifest.json."""
    _docker_archive(
        path, layout, digest_of(image.config), [layer.blob.digest for layer in image.layers],
        repo_tag=repo_tag, epoch=epoch,
    )  # fmt: skip


def write_docker_archive_of(path: Path, layout: Layout, image: Image, *, repo_tag: str) -> None:
    """The same tar for an image of an existing layout (a pulled one, for Modzy)."""
    config = image.manifest["config"]["digest"]
    created = layout.json_blob(config).get("created", "")
    epoch = 0
    if created:
        epoch = int(datetime.fromisoformat(created).timestamp())
    _docker_archive(
        path, layout.directory, config, [d.digest for d in image.layers], repo_tag=repo_tag, epoch=epoch
    )


def _docker_archive(
    path: Path, layout: Path, config_digest: str, layer_digests: list[str], *, repo_tag: str, epoch: int
) -> None:
    blob_names = [f"blobs/sha256/{digest.removeprefix('sha256:')}" for digest in layer_digests]
    config_name = f"blobs/sha256/{config_digest.removeprefix('sha256:')}"
    manifest_json = canonical([{"Config": config_name, "RepoTags": [repo_tag], "Layers": blob_names}])

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

    with atomic.replacing(path) as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
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
