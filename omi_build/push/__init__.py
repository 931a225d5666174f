"""Push a built layout to a registry, and pull one back, with every referrer.

Order of a push, so that no tag ever points at a half-pushed image: every blob (skipped where
the registry has it, mounted from a sibling repository where it can), then each platform's
manifest and the index by digest, then the signatures, SBOMs and attestations (OCI referrers,
and the fallback index where the registry lacks the referrers API), cosign's classic signature
tags, and last the tag itself. A tag that already names another image is refused unless forced.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omi_build.errors import RegistryError
from omi_build.image.layout import (
    INDEX_TYPE,
    MANIFEST_TYPE,
    REF_NAME,
    Descriptor,
    Image,
    Layout,
    tag_of_signature,
)
from omi_build.registry import Client, Reference, add_referrers, checked_digest, list_referrers

_PARALLEL = 4
VERSION = "org.opencontainers.image.version"


@dataclass(frozen=True, kw_only=True, slots=True)
class Pushed:
    reference: str  # registry/repository:tag@digest
    digest: str
    images: tuple[tuple[str, str], ...]  # (platform, digest)
    referrers: int
    blobs: dict[str, int] = field(default_factory=dict)  # 'uploaded' / 'exists' / 'mounted' -> count
    referrers_api: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Pulled:
    directory: Path
    reference: str
    digest: str
    tag: str
    images: tuple[tuple[str, str], ...]
    referrers: int
    blobs: int  # downloaded (the rest were there)


def _platform(raw: dict[str, Any]) -> str:
    platform = raw.get("platform") or {}
    return f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"


def _blobs_of(manifest: dict[str, Any]) -> list[Descriptor]:
    """The config and layers a manifest names, each digest checked before it names a file."""
    config = manifest.get("config")
    found = [Descriptor.of(config)] if isinstance(config, dict) else []
    found += [Descriptor.of(layer) for layer in manifest.get("layers") or []]
    for descriptor in found:
        checked_digest(descriptor.digest, what="a blob")
    return found


def _contents(
    layout: Layout, target: Descriptor, images: list[Image]
) -> tuple[dict[str, list[Descriptor]], list[tuple[str, Descriptor]], dict[str, Descriptor]]:
    """The referrers of the index and of each image, cosign's classic signatures, and every
    blob all of them name."""
    subjects = [target.digest, *(image.digest for image in images)]
    referrers = {subject: layout.referrers(subject) for subject in subjects}
    classic = [(subject, layout.tagged(tag_of_signature(subject))) for subject in subjects]
    classic_found = [(subject, d) for subject, d in classic if d is not None]
    blobs: dict[str, Descriptor] = {}
    for image in images:
        blobs.update({d.digest: d for d in _blobs_of(image.manifest)})
    for descriptor in [d for found in referrers.values() for d in found] + [d for _, d in classic_found]:
        blobs.update({d.digest: d for d in _blobs_of(layout.json_blob(descriptor.digest))})
    return referrers, classic_found, blobs


def push(
    layout: Layout,
    reference: Reference,
    client: Client,
    *,
    tag: str | None = None,
    force: bool = False,
    mount_from: tuple[str, ...] = (),
) -> Pushed:
    """Push the layout's target (its index under `tag`, the only one when None) to `reference`."""
    if reference.digest:
        msg = f"cannot push to a digest ({reference}): the registry names it after the bytes"
        raise RegistryError(
            msg, hint="push to a tag, e.g. host/repo:1.0.0, or to host/repo (the image's version)"
        )
    target = layout.target_index(tag)
    name = reference.tag or target.annotations.get(REF_NAME) or "latest"
    repository = reference.repository
    existing = client.manifest_digest(repository, name)
    if existing is not None and existing != target.digest and not force:
        msg = f"{reference.with_tag(name)} already names another image ({existing})"
        raise RegistryError(msg, hint="push under a new tag (a new version), or pass --force to move the tag")

    images = layout.images(target.annotations.get(REF_NAME))
    referrers, classic_found, blobs = _contents(layout, target, images)

    def upload(descriptor: Descriptor) -> str:
        path = layout.blob_path(descriptor.digest)
        return client.upload_blob(
            repository,
            descriptor.digest,
            descriptor.size,
            lambda: path.open("rb"),
            mount_from=mount_from,
            what=f"blob {descriptor.digest[7:19]}",
        )

    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="push") as pool:
        outcomes = list(pool.map(upload, sorted(blobs.values(), key=lambda d: -d.size)))
    counts = {outcome: outcomes.count(outcome) for outcome in sorted(set(outcomes))}

    for image in images:
        client.put_manifest(repository, image.digest, layout.blob(image.digest), MANIFEST_TYPE)
    client.put_manifest(repository, target.digest, layout.blob(target.digest), INDEX_TYPE)
    api = False
    for found in referrers.values():
        for descriptor in found:
            api = (
                client.put_manifest(
                    repository, descriptor.digest, layout.blob(descriptor.digest), MANIFEST_TYPE
                )
                or api
            )
    if not api:
        with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="referrers") as pool:
            list(
                pool.map(
                    lambda item: add_referrers(client, repository, item[0], [d.to_json() for d in item[1]]),
                    [(subject, found) for subject, found in referrers.items() if found],
                )
            )
    for subject, descriptor in classic_found:
        client.put_manifest(
            repository, tag_of_signature(subject), layout.blob(descriptor.digest), MANIFEST_TYPE
        )
    client.put_manifest(repository, name, layout.blob(target.digest), INDEX_TYPE)  # the tag goes last
    return Pushed(
        reference=str(reference.with_tag(name).with_digest(target.digest)),
        digest=target.digest,
        images=tuple((_platform({"platform": image.platform}), image.digest) for image in images),
        referrers=sum(len(found) for found in referrers.values()) + len(classic_found),
        blobs=counts,
        referrers_api=api,
    )


def _fetch_blobs(client: Client, repository: str, layout: Layout, descriptors: Iterable[Descriptor]) -> int:
    wanted = {d.digest: d for d in descriptors if not layout.has_blob(d.digest)}

    def one(descriptor: Descriptor) -> None:
        client.download_blob(
            repository, descriptor.digest, layout.blob_path(descriptor.digest), size=descriptor.size,
            what=f"blob {descriptor.digest[7:19]}",
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="pull") as pool:
        list(pool.map(one, wanted.values()))
    return len(wanted)


def _manifest(client: Client, repository: str, digest: str, layout: Layout) -> dict[str, Any]:
    found = client.get_manifest(repository, checked_digest(digest, what="a manifest"))
    if found is None:
        msg = f"{client.registry}/{repository} lacks the manifest {digest} its index names"
        raise RegistryError(msg, hint="push the image again")
    layout.put_blob(found.data)
    return found.json()


def _referrer_entry(descriptor: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The descriptor index.json lists for a pulled referrer, as `Layout.attach` writes it."""
    entry: dict[str, Any] = {
        "mediaType": MANIFEST_TYPE,
        "digest": descriptor["digest"],
        "size": int(descriptor["size"]),
        "artifactType": str(manifest.get("artifactType") or manifest.get("config", {}).get("mediaType", "")),
    }
    if annotations := manifest.get("annotations"):
        entry["annotations"] = dict(annotations)
    return entry


def pull(client: Client, reference: Reference, directory: Path) -> Pulled:
    """Pull the image `reference` names, every platform and every referrer, into an OCI layout."""
    repository = reference.repository
    top = client.get_manifest(repository, reference.identifier)
    if top is None:
        msg = f"{reference} does not exist"
        raise RegistryError(msg, hint="check the tag or digest; the registry holds no manifest under it")
    layout = Layout.create(directory)
    layout.put_blob(top.data)
    raw = top.json()
    tag = reference.tag or str((raw.get("annotations") or {}).get(VERSION) or "") or top.digest[7:19]
    children: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if top.media_type in {INDEX_TYPE, "application/vnd.docker.distribution.manifest.list.v2+json"}:
        children = [
            (entry, _manifest(client, repository, entry["digest"], layout))
            for entry in raw.get("manifests", [])
        ]
    blobs = [d for _, manifest in children for d in _blobs_of(manifest)]
    if not children:
        blobs = _blobs_of(raw)
    entries: list[dict[str, Any]] = [
        {
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": len(top.data),
            "annotations": {REF_NAME: tag},
        }
    ]
    for entry, _ in children:
        arch = (entry.get("platform") or {}).get("architecture", "unknown")
        entries.append({**entry, "annotations": {REF_NAME: f"{tag}-{arch}"}})
    count = 0
    for subject in [top.digest, *(entry["digest"] for entry, _ in children)]:
        for descriptor in list_referrers(client, repository, subject):
            manifest = _manifest(client, repository, descriptor["digest"], layout)
            blobs += _blobs_of(manifest)
            entries.append(_referrer_entry(descriptor, manifest))
            count += 1
        signature = client.get_manifest(repository, tag_of_signature(subject))
        if signature is not None:
            layout.put_blob(signature.data)
            blobs += _blobs_of(signature.json())
            entries.append(
                {"mediaType": MANIFEST_TYPE, "digest": signature.digest, "size": len(signature.data),
                 "annotations": {REF_NAME: tag_of_signature(subject)}}
            )  # fmt: skip
            count += 1
    fetched = _fetch_blobs(client, repository, layout, blobs)
    layout.list_all(entries)  # last: index.json names only what is there
    return Pulled(
        directory=directory,
        reference=str(reference.with_tag(tag).with_digest(top.digest))
        if reference.tag
        else f"{reference.name}@{top.digest}",
        digest=top.digest,
        tag=tag,
        images=tuple((_platform(entry), entry["digest"]) for entry, _ in children),
        referrers=count,
        blobs=fetched,
    )


def referrers_of(client: Client, reference: Reference) -> list[dict[str, Any]]:
    """What the registry lists as referring to the image and to each of its platform images."""
    repository = reference.repository
    top = client.get_manifest(repository, reference.identifier)
    if top is None:
        msg = f"{reference} does not exist"
        raise RegistryError(msg)
    subjects = [top.digest, *(m["digest"] for m in top.json().get("manifests", []))]
    return [
        {"subject": subject, **descriptor}
        for subject in subjects
        for descriptor in list_referrers(client, repository, subject)
    ]
