"""The OCI image layout on disk: the one place that writes it and the one that reads it.

Layout: `oci-layout`, `index.json` and `blobs/sha256/<hex>`. `index.json` lists each target's
image index under its tag (`org.opencontainers.image.ref.name`), each platform's image under
`<tag>-<arch>`, and any artifacts attached to them as OCI 1.1 referrers (a manifest with
`subject` and `artifactType`). Attaching changes `index.json` only: the images and the
target's index keep their digests.

>>> layout = Layout.open(Path("examples/iris-sklearn/omi-out/cpu"))  # doctest: +SKIP
>>> layout.image("amd64").digest  # doctest: +SKIP
'sha256:...'
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import tarfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from omi_build import atomic
from omi_build.digests import canonical, digest_of, sha256_stream
from omi_build.errors import BuildError, LayoutError
from omi_build.platforms import arch_of
from omi_build.store import StatCache, Store, sha256_file

if TYPE_CHECKING:
    from . import PlatformImage

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"  # an artifact's config: `{}`
EMPTY_JSON = b"{}"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def index(images: list[PlatformImage], labels: dict[str, str]) -> bytes:
    """A target's image index: one manifest per platform."""
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": [image.descriptor() for image in images],
            "annotations": labels,
        }
    )


def platform_ref(tag: str, platform: str) -> str:
    """The ref name of one platform's image: '1.0.0-amd64'."""
    return f"{tag}-{arch_of(platform)}"


_FICLONE = 0x40049409  # Linux's ioctl for a copy-on-write clone (btrfs, XFS, bcachefs)


def _copy(source: Path, destination: Path) -> None:
    """A reflink where the file system has them (instant, no space), else a real copy. Never a
    hard link: the output must not share bytes with the cache, or one damaged cache entry would
    damage every image built from it.

    Not synced (a gigabyte's fsync took 0.6-0.8 s here, as long as the copy): a blob is made
    again from the cache, and after a crash an unsynced copy is shorter on disk than the stat
    this build remembered (ext4, XFS and btrfs commit a size only with its data), so the next
    build hashes it, finds it damaged and writes it again; `verify` re-hashes every blob."""
    import fcntl  # noqa: PLC0415 - POSIX only

    with source.open("rb") as reader, destination.open("wb") as writer:
        try:
            fcntl.ioctl(writer.fileno(), _FICLONE, reader.fileno())
        except OSError:
            _copy_range(reader, writer)


def _copy_range(reader: IO[bytes], writer: IO[bytes]) -> None:
    """The kernel's copy (copy_file_range: no trip through user memory, 0.4 s per GB here
    where read and write took 0.7), else read and write."""
    size = os.fstat(reader.fileno()).st_size
    copied = 0
    try:
        while copied < size and (done := os.copy_file_range(reader.fileno(), writer.fileno(), size - copied)):
            copied += done
    except OSError:
        reader.seek(copied)
        writer.seek(copied)
        shutil.copyfileobj(reader, writer, 1 << 20)
        return
    if copied < size:  # the source shrank under us: what was read is what the caller checks
        shutil.copyfileobj(reader, writer, 1 << 20)


def _intact(path: Path, digest: str, known: StatCache | None = None) -> bool:
    """Whether the layout already holds the blob, byte for byte: re-hashed, never trusted by
    size, unless its stat is the one it had when this cache last hashed or wrote it."""
    if not path.is_file() or path.is_symlink():
        return False
    if known is None:
        return sha256_file(path) == digest.removeprefix("sha256:")
    try:
        with path.open("rb") as stream:
            return known.digest(path.name, stream, sha256_stream) == digest.removeprefix("sha256:")
    except OSError:
        return False


def _place(source: Path, target: Path) -> None:
    temporary = atomic.temporary_beside(target)
    try:
        _copy(source, temporary)
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = digest_of(data)
    target = blobs / digest.removeprefix("sha256:")
    if not (target.is_file() and not target.is_symlink() and target.read_bytes() == data):
        atomic.write_bytes(target, data)
    return digest


def _make_layout_dirs(directory: Path, blobs: Path) -> None:
    for folder in (directory, directory / "blobs", blobs):
        if folder.exists() and not folder.is_dir():
            msg = f"{folder} exists and is not a directory, so no image layout can be written there"
            raise BuildError(msg, hint="remove it, or pass another --output")
    blobs.mkdir(parents=True, exist_ok=True)  # an OSError is reported by write_layout


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
    known = store.stats(blobs)
    for image in images:
        for layer in image.layers:
            target = blobs / layer.blob.digest.removeprefix("sha256:")
            if not _intact(target, layer.blob.digest, known):  # a damaged earlier blob is written again
                source = store.verified(layer.blob.digest, what=f"layer {layer.name}")
                _place(source, target)
                known.trust_written(target.name, target, layer.blob.digest.removeprefix("sha256:"))
        _write_blob(blobs, image.config)
        _write_blob(blobs, image.manifest)
    index_bytes = index(images, labels)
    index_digest = _write_blob(blobs, index_bytes)
    listed: list[dict[str, Any]] = [
        {
            "mediaType": INDEX_TYPE,
            "digest": index_digest,
            "size": len(index_bytes),
            "annotations": {REF_NAME: tag},
        },
        *(
            {
                **image.descriptor(),
                "annotations": {REF_NAME: platform_ref(tag, image.platform)},
            }
            for image in images
        ),
    ]
    subjects = {index_digest, *(image.digest for image in images)}
    listed += [d for d in _kept_artifacts(directory, subjects) if d not in listed]
    top = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": listed}
    (directory / "oci-layout").write_bytes(canonical(LAYOUT_FILE))
    _write_index(directory, top)
    return index_digest


# Signatures outlive a rebuild that gives the same digests; what a build attaches, it attaches anew.
KEPT_ARTIFACT_TYPES = frozenset({"application/vnd.dev.sigstore.bundle.v0.3+json"})


def _kept_artifacts(directory: Path, subjects: set[str]) -> list[dict[str, Any]]:
    """The signatures `omi-build sign` attached to images this build made again (the same
    digests, so they still hold): kept. Anything about other images goes."""
    try:
        old = json.loads((directory / "index.json").read_text(encoding="utf-8"))["manifests"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    kept = []
    tags = {tag_of_signature(subject) for subject in subjects}
    for raw in old if isinstance(old, list) else []:
        try:
            if raw.get("annotations", {}).get(REF_NAME) in tags:
                kept.append(raw)
            elif raw.get("artifactType") in KEPT_ARTIFACT_TYPES:
                path = directory / "blobs" / "sha256" / str(raw["digest"]).removeprefix("sha256:")
                if json.loads(path.read_bytes()).get("subject", {}).get("digest") in subjects:
                    kept.append(raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged entry is dropped, not trusted
    return kept


def tag_of_signature(digest: str) -> str:
    """The tag cosign gives the classic signatures of the manifest `digest`: 'sha256-<hex>.sig'."""
    algorithm, _, hexadecimal = digest.partition(":")
    return f"{algorithm}-{hexadecimal}.sig"


def _write_index(directory: Path, top: dict[str, Any]) -> None:
    atomic.write_bytes(directory / "index.json", canonical(top))


def _reader_lock(directory: Path) -> int | None:
    """A shared flock on the layout's folder (None where it cannot be opened: open reports)."""
    import fcntl  # noqa: PLC0415 - POSIX only

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:  # a file system without locks: read unguarded (a prune then cannot lock either)
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def writing(directory: Path) -> Iterator[None]:
    """One writer at a time in a layout (builds, pulls and attachments into one folder wait
    for each other); readers are not held up."""
    import fcntl  # noqa: PLC0415 - POSIX only

    blobs = directory / "blobs" / "sha256"
    try:
        _make_layout_dirs(directory, blobs)
        fd = os.open(blobs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        msg = f"cannot write the image layout to {directory}: {exc.strerror or exc}"
        raise BuildError(msg, hint="check the folder and its free space, or pass another --output") from exc
    try:
        with contextlib.suppress(OSError):  # no locks on this file system: writers are on their own
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_DIGEST_NAME = re.compile(r"[0-9a-f]{64}")
_LISTS = ("manifests", "layers")


def referenced(directory: Path) -> set[str] | None:
    """The hex digests of every blob the layout's index.json reaches (manifests, configs,
    layers, referrers); None when a document on the way cannot be read, so nothing is removed."""
    try:
        top = json.loads((directory / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found: set[str] = set()
    waiting = [top]
    while waiting:
        document = waiting.pop()
        if not isinstance(document, dict):
            return None
        descriptors = [d for key in _LISTS for d in document.get(key) or []]
        if isinstance(document.get("config"), dict):
            descriptors.append(document["config"])
        for descriptor in descriptors:
            digest = str(descriptor.get("digest", "")) if isinstance(descriptor, dict) else ""
            hexadecimal = digest.removeprefix("sha256:")
            if not _DIGEST_NAME.fullmatch(hexadecimal) or hexadecimal in found:
                continue
            found.add(hexadecimal)
            if descriptor.get("mediaType") in {MANIFEST_TYPE, INDEX_TYPE}:
                try:
                    waiting.append(json.loads((directory / "blobs" / "sha256" / hexadecimal).read_bytes()))
                except FileNotFoundError:
                    continue  # a missing blob is verify's to report
                except (OSError, ValueError):
                    return None
    return found


def prune_unreferenced(directory: Path) -> tuple[int, int]:
    """Remove the blobs index.json no longer reaches (an earlier build's layers, SBOMs): the
    number removed and their bytes. Skipped, (0, 0), while a reader holds the layout (an
    `omi-build` command that opened it before this build wrote its index), or when a document
    of the layout cannot be read. Call inside writing()."""
    import fcntl  # noqa: PLC0415 - POSIX only

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a reader holds it, or the file system has no locks: keep everything
            return 0, 0
        keep = referenced(directory)
        if keep is None:
            return 0, 0
        removed, freed = 0, 0
        for path in (directory / "blobs" / "sha256").iterdir():
            if not _DIGEST_NAME.fullmatch(path.name) or path.name in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = path.lstat().st_size
                path.unlink()
                removed, freed = removed + 1, freed + size
        return removed, freed
    finally:
        os.close(fd)


@dataclass(frozen=True, kw_only=True, slots=True)
class Descriptor:
    """A pointer to a blob: what it is, its digest and size, and its annotations."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str]
    artifact_type: str = ""

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Descriptor:
        return cls(
            media_type=str(raw.get("mediaType", "")),
            digest=str(raw["digest"]),
            size=int(raw["size"]),
            annotations=dict(raw.get("annotations") or {}),
            artifact_type=str(raw.get("artifactType", "")),
        )

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            raw["artifactType"] = self.artifact_type
        if self.annotations:
            raw["annotations"] = dict(self.annotations)
        return raw


@dataclass(frozen=True, kw_only=True, slots=True)
class Image:
    """One platform's image in a layout: its manifest's descriptor and the manifest itself."""

    descriptor: Descriptor
    manifest: dict[str, Any]
    platform: dict[str, str]

    @property
    def architecture(self) -> str:
        return self.platform.get("architecture", "")

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.of(layer) for layer in self.manifest.get("layers", [])]


class Layout:
    """An OCI image layout opened for reading (and for attaching artifacts).

    Every blob is read with its digest checked: a damaged layout is an error, never data.
    """

    def __init__(self, directory: Path, top: dict[str, Any], reading: int | None = None) -> None:
        self.directory = directory
        self._top = top
        # A shared lock on the folder while this object lives: a rebuild removes the blobs its
        # index no longer names only when no reader holds one (prune_unreferenced).
        self._release = weakref.finalize(self, os.close, reading) if reading is not None else None

    def close(self) -> None:
        """Release the reader's lock now rather than when the object goes."""
        if self._release is not None:
            self._release()

    @classmethod
    def open(cls, directory: Path) -> Layout:
        reading = _reader_lock(directory)  # before index.json: its blobs stay while we read
        try:
            return cls._open(directory, reading)
        except BaseException:
            if reading is not None:
                os.close(reading)
            raise

    @classmethod
    def _open(cls, directory: Path, reading: int | None) -> Layout:
        marker = directory / "oci-layout"
        try:
            version = json.loads(marker.read_text(encoding="utf-8")).get("imageLayoutVersion")
            top = json.loads((directory / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, AttributeError) as exc:
            msg = f"{directory} is not an OCI image layout ({exc})"
            raise LayoutError(
                msg, hint="pass the folder 'omi-build build' wrote, e.g. omi-out/<target>"
            ) from exc
        if version != LAYOUT_FILE["imageLayoutVersion"] or not isinstance(top.get("manifests"), list):
            msg = f"{directory} is not an OCI image layout version 1.0.0"
            raise LayoutError(msg)
        return cls(directory, top, reading)

    @classmethod
    def create(cls, directory: Path) -> Layout:
        """The layout at `directory`, made empty where there is none (a pull writes into it)."""
        if (directory / "oci-layout").is_file():
            return cls.open(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            msg = f"{directory} is neither empty nor an OCI image layout"
            raise LayoutError(msg, hint="pull into an empty or new folder, or into an earlier pull")
        blobs = directory / "blobs" / "sha256"
        _make_layout_dirs(directory, blobs)
        top = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}
        _write_index(directory, top)
        (directory / "oci-layout").write_bytes(canonical(LAYOUT_FILE))
        return cls(directory, top)

    def put_blob(self, data: bytes) -> str:
        """Write a blob (a manifest, a config); its digest."""
        return _write_blob(self.directory / "blobs" / "sha256", data)

    def has_blob(self, digest: str) -> bool:
        """Whether the layout holds the blob intact (re-hashed)."""
        return _intact(self.blob_path(digest), digest)

    def list_all(self, entries: Iterable[dict[str, Any]]) -> None:
        """List descriptors in index.json: one with a ref name replaces what had that name, one
        without is added unless its digest is listed."""
        top = list(self._top["manifests"])
        for entry in entries:
            name = (entry.get("annotations") or {}).get(REF_NAME)
            if name is not None:
                top = [raw for raw in top if (raw.get("annotations") or {}).get(REF_NAME) != name]
            elif any(raw.get("digest") == entry["digest"] for raw in top):
                continue
            top.append(entry)
        self._top = {**self._top, "manifests": top}
        _write_index(self.directory, self._top)

    @property
    def descriptors(self) -> list[Descriptor]:
        return [Descriptor.of(raw) for raw in self._top["manifests"]]

    def blob_path(self, digest: str) -> Path:
        return self.directory / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def blob(self, digest: str) -> bytes:
        """A blob's bytes, checked against its digest."""
        try:
            data = self.blob_path(digest).read_bytes()
        except OSError as exc:
            msg = f"{self.directory} lacks the blob {digest}"
            raise LayoutError(msg, hint="build the image again") from exc
        if digest_of(data) != digest:
            msg = f"the blob {digest} in {self.directory} is damaged (its sha256 is {digest_of(data)})"
            raise LayoutError(msg, hint="build the image again; the build rewrites damaged blobs")
        return data

    def json_blob(self, digest: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.blob(digest))
        return loaded

    def tags(self) -> list[str]:
        """The tags of the target indexes the layout holds."""
        return [
            d.annotations[REF_NAME]
            for d in self.descriptors
            if d.media_type == INDEX_TYPE and REF_NAME in d.annotations
        ]

    def target_index(self, tag: str | None = None) -> Descriptor:
        """The descriptor of a target's image index (the only one, when `tag` is None)."""
        found = [d for d in self.descriptors if d.media_type == INDEX_TYPE]
        if tag is not None:
            found = [d for d in found if d.annotations.get(REF_NAME) == tag]
        if not found:
            msg = f"{self.directory} holds no image index" + (f" tagged {tag}" if tag else "")
            raise LayoutError(msg, hint=f"its tags are: {', '.join(self.tags()) or 'none'}")
        return found[0]

    def images(self, tag: str | None = None) -> list[Image]:
        """Each platform's image of a target, in the index's order."""
        target = self.json_blob(self.target_index(tag).digest)
        return [
            Image(
                descriptor=Descriptor.of(raw),
                manifest=self.json_blob(raw["digest"]),
                platform=dict(raw.get("platform") or {}),
            )
            for raw in target.get("manifests", [])
        ]

    def image(self, arch: str, tag: str | None = None) -> Image:
        """The image of one architecture ('amd64', 'arm64')."""
        for candidate in self.images(tag):
            if candidate.architecture == arch:
                return candidate
        msg = f"{self.directory} holds no image for linux/{arch}"
        raise LayoutError(msg, hint="add the platform to the target, or use a machine of that platform")

    def ref_of(self, image: Image) -> str:
        """The ref name under which `image` is listed in index.json (what umoci and skopeo take)."""
        for descriptor in self.descriptors:
            if descriptor.digest == image.digest and REF_NAME in descriptor.annotations:
                return descriptor.annotations[REF_NAME]
        msg = f"{image.digest} has no ref name in {self.directory}/index.json"
        raise LayoutError(msg, hint="build the image again")

    @contextlib.contextmanager
    def layer_tar(self, layer: Descriptor) -> Iterator[tarfile.TarFile]:
        """A layer's tar, read as a stream (gzip or zstd): its digest is checked by hashing the
        blob in chunks first, and nothing holds the layer whole, whatever its size."""
        path = self.blob_path(layer.digest)
        try:
            intact = sha256_file(path) == layer.digest.removeprefix("sha256:")
        except OSError as exc:
            msg = f"{self.directory} lacks the blob {layer.digest}"
            raise LayoutError(msg, hint="build the image again") from exc
        if not intact:
            msg = f"the layer {layer.digest} in {self.directory} is damaged"
            raise LayoutError(msg, hint="build the image again; the build rewrites damaged blobs")
        with path.open("rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            plain: Any  # a GzipFile, a zstd reader or the file itself
            if magic == b"\x28\xb5\x2f\xfd":  # zstd frames, one per 4 MiB piece
                import zstandard  # noqa: PLC0415

                plain = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            elif magic.startswith(b"\x1f\x8b"):
                plain = gzip.GzipFile(fileobj=raw)  # every member of the pieced layer, in order
            else:
                plain = raw
            with plain, tarfile.open(fileobj=plain, mode="r|") as tar:
                yield tar

    def file(self, image: Image, path: str) -> bytes | None:
        """A file of the image's file system, from the last layer that has it."""
        for layer in reversed(image.layers):
            with self.layer_tar(layer) as tar:
                for member in tar:
                    if member.name == path and member.isfile():
                        extracted = tar.extractfile(member)
                        return extracted.read() if extracted is not None else None
        return None

    # -- referrers --------------------------------------------------------------------------
    def attach(
        self,
        subject: Descriptor,
        artifact_type: str,
        blobs: Iterable[tuple[str, bytes]],
        *,
        annotations: dict[str, str] | None = None,
    ) -> Descriptor:
        """Attach an artifact to `subject` as an OCI 1.1 referrer and list it in index.json.

        The artifact is a manifest with `artifactType`, the empty config and `blobs` (media
        type, bytes) as its layers, and `subject` pointing at the image or index. Nothing the
        subject's digest covers changes. Attaching the same artifact twice lists it once.
        """
        layers = []
        for media_type, data in blobs:
            _write_blob(self.directory / "blobs" / "sha256", data)
            layers.append({"mediaType": media_type, "digest": digest_of(data), "size": len(data)})
        _write_blob(self.directory / "blobs" / "sha256", EMPTY_JSON)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": digest_of(EMPTY_JSON), "size": len(EMPTY_JSON)},
            "layers": layers,
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        }
        if annotations:
            manifest["annotations"] = dict(sorted(annotations.items()))
        data = canonical(manifest)
        digest = _write_blob(self.directory / "blobs" / "sha256", data)
        descriptor = Descriptor(
            media_type=MANIFEST_TYPE,
            digest=digest,
            size=len(data),
            annotations=dict(annotations or {}),
            artifact_type=artifact_type,
        )
        if all(d.digest != digest for d in self.descriptors):
            self._top = {**self._top, "manifests": [*self._top["manifests"], descriptor.to_json()]}
            _write_index(self.directory, self._top)
        return descriptor

    def put_tagged(self, tag: str, manifest: dict[str, Any], blobs: Iterable[bytes]) -> Descriptor:
        """Write `blobs` and the image `manifest`, and list it under `tag` in index.json in place
        of whatever had that tag (cosign's classic signatures live under such tags)."""
        for data in blobs:
            _write_blob(self.directory / "blobs" / "sha256", data)
        data = canonical(manifest)
        digest = _write_blob(self.directory / "blobs" / "sha256", data)
        descriptor = Descriptor(
            media_type=MANIFEST_TYPE, digest=digest, size=len(data), annotations={REF_NAME: tag}
        )
        kept = [raw for raw in self._top["manifests"] if (raw.get("annotations") or {}).get(REF_NAME) != tag]
        self._top = {**self._top, "manifests": [*kept, descriptor.to_json()]}
        _write_index(self.directory, self._top)
        return descriptor

    def tagged(self, tag: str) -> Descriptor | None:
        for descriptor in self.descriptors:
            if descriptor.annotations.get(REF_NAME) == tag:
                return descriptor
        return None

    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """The artifacts listed in index.json whose subject is the digest `subject`."""
        found = []
        for descriptor in self.descriptors:
            if descriptor.media_type != MANIFEST_TYPE or not descriptor.artifact_type:
                continue
            manifest = self.json_blob(descriptor.digest)
            if manifest.get("subject", {}).get("digest") != subject:
                continue
            if artifact_type is None or descriptor.artifact_type == artifact_type:
                found.append(descriptor)
        return found
