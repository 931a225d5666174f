"""The image's layers, ordered by how often they change, each built once per set of inputs.

    debian base  ->  heavy wheels (one each)  ->  other wheels  ->  server runtime
    ->  model code (+ serving config)  ->  model files

A layer's cache key is the digest of its inputs (locked hashes, file contents, the builder's
layer format); a hit reuses the compressed blob without reading any input again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, Self

from omi_build import atomic
from omi_build.digests import canonical, digest_of, sha256_stream
from omi_build.download import Downloads
from omi_build.errors import BuildError, FetchError, PackageFileError
from omi_build.lock import DebPackage, Wheel
from omi_build.manifest import files
from omi_build.platforms import arch_of
from omi_build.progress import Progress
from omi_build.store import Signature, StatCache, Store, signature

from . import _deb, _interpreter, _inventory
from ._inventory import Component
from ._tar import SAMPLE, Blob, Compression, Entry, Source, deflates, write
from ._unpack import (
    SITE_PACKAGES,
    UNPACK_FORMAT,
    Archive,
    Unpacked,
    Unpacker,
    wheel_entries,
    with_bytecode,
)

# Bump when the same inputs would now give different layer bytes.
LAYER_FORMAT = 7
RUNTIME_PACKAGE = "omi_runtime"
MODEL_DIR = "opt/omi/model"
RUNTIME_LAYER = "server runtime"  # the layer the SBOM records as omi-build-runtime
CONFIG_PATH = "opt/omi/omi.json"
HEAVY_WHEEL_BYTES = 10 * 1024 * 1024
_SHELLS = ("usr/bin/sh", "usr/bin/bash", "usr/bin/dash", "usr/bin/busybox", "usr/bin/zsh")
_RUNTIME_SOURCE = Path(__file__).resolve().parent.parent / "runtime"

__all__ = [
    "PROGRAMS", "Archive", "Blob", "Component", "Entry", "Facts", "Layer", "LayerBuilder", "ModelFiles",
    "Unpacked", "built_blobs", "file_groups", "model_file_digests", "model_file_names",
    "wheel_entries",
]  # fmt: skip


# What the security policy refuses to find in an image: shells (never in the base) and
# package managers, by the paths they install.
PROGRAMS = (
    *_SHELLS,
    "usr/bin/dpkg", "usr/bin/apt", "usr/bin/apt-get", "usr/bin/rpm", "usr/bin/yum", "usr/bin/dnf",
    "usr/bin/apk", "usr/bin/pip", "usr/bin/pip3", "usr/bin/conda", "usr/bin/uv",
    f"{SITE_PACKAGES}/pip/__init__.py", f"{SITE_PACKAGES}/conda/__init__.py",
)  # fmt: skip
_PROGRAMS = frozenset(PROGRAMS)
_NVIDIA_LIBRARY = re.compile(rf"^{re.escape(SITE_PACKAGES)}/nvidia/[^/]+/lib/[^/]+\.so(\.[0-9]+)*$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Facts:
    """What the security policy asks of a layer, found while it was built and kept with it,
    so a cached layer is checked without reading it again."""

    entries: int = 0
    setid: tuple[str, ...] = ()  # files that asked for setuid or setgid (the tar drops the bits)
    programs: tuple[str, ...] = ()  # shells and package managers (PROGRAMS)
    # folders of NVIDIA's wheels that hold shared libraries (nvidia/cuda_runtime/lib for
    # CUDA 12, nvidia/cu13/lib for 13): a CUDA image's LD_LIBRARY_PATH
    libraries: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Self:
        count, setid, programs, libraries = 0, [], [], set()
        for entry in entries:
            count += 1
            path = entry.path.strip("/")
            if entry.kind == "file" and entry.mode & 0o6000:
                setid.append(path)
            if path in _PROGRAMS:
                programs.append(path)
            if entry.kind == "file" and _NVIDIA_LIBRARY.match(path):
                libraries.add(path.rsplit("/", 1)[0])
        return cls(
            entries=count,
            setid=tuple(sorted(setid)),
            programs=tuple(sorted(programs)),
            libraries=tuple(sorted(libraries)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "setid": list(self.setid),
            "programs": list(self.programs),
            "libraries": list(self.libraries),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        lists = [raw["setid"], raw["programs"], raw["libraries"]]
        if not (all(isinstance(item, list) for item in lists) and isinstance(raw["entries"], int)):
            msg = "a damaged layer record"
            raise TypeError(msg)
        setid, programs, libraries = (tuple(map(str, item)) for item in lists)
        return cls(entries=raw["entries"], setid=setid, programs=programs, libraries=libraries)


@dataclass(frozen=True, kw_only=True, slots=True)
class Layer:
    name: str
    blob: Blob
    inventory: tuple[Component, ...] = ()  # the packages it holds (none for runtime and model)
    facts: Facts = dataclasses.field(default_factory=Facts)


def _record(blob: Blob, inventory: tuple[Component, ...], facts: Facts) -> str:
    """A built layer's cache record: its blob, what it holds, what the policy checks."""
    return json.dumps(
        {
            "blob": dataclasses.asdict(blob),
            "inventory": [c.to_json() for c in inventory],
            "facts": facts.to_json(),
        },
        sort_keys=True,
    )


def _read_record(path: Path) -> tuple[Blob, tuple[Component, ...], Facts]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return (
        Blob(**raw["blob"]),
        tuple(Component.from_json(c) for c in raw["inventory"]),
        Facts.from_json(raw["facts"]),
    )


def built_blobs(store: Store) -> set[str]:
    """The digests (hex) of the blobs that built layers: the store's other blobs are downloads."""
    digests = set()
    for record in store.folder("layers").glob("[!.]*.json"):
        try:
            # Only the blob: a record of an older format still names a layer this cache built.
            blob = Blob(**json.loads(record.read_text(encoding="utf-8"))["blob"])
            digests.add(blob.digest.removeprefix("sha256:"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return digests


def _digest_json(value: Any) -> str:
    return digest_of(canonical(value)).removeprefix("sha256:")


def _passwd(uid: int) -> list[Entry]:
    passwd = (
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"nonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    )
    group = f"root:x:0:\nnonroot:x:{uid}:\nnobody:x:65534:\n"
    return [
        Entry(path="etc/passwd", data=passwd.encode()),
        Entry(path="etc/group", data=group.encode()),
        Entry(path="etc/nsswitch.conf", data=b"passwd: files\ngroup: files\nhosts: files dns\n"),
        Entry(path="home/nonroot", kind="dir", mode=0o700, uid=uid, gid=uid),
        Entry(path="root", kind="dir", mode=0o700),
        Entry(path="tmp", kind="dir", mode=0o1777),
    ]


def debian_entries(packages: Iterable[tuple[DebPackage, Unpacked]], *, uid: int) -> list[Entry]:
    """The distroless-style base: package files plus what maintainer scripts would have made."""
    tree: dict[str, Entry] = {}
    certificates: list[tuple[str, bytes]] = []
    for package, unpacked in sorted(packages, key=lambda item: item[0].name):
        for entry in unpacked.entries:
            if entry.kind == "dir" and entry.path in tree:
                continue
            tree[entry.path] = entry
            if entry.path.startswith("usr/share/ca-certificates/") and entry.path.endswith(".crt"):
                certificates.append((entry.path, entry.data))
        status = f"var/lib/dpkg/status.d/{package.name}"
        tree[status] = Entry(path=status, data=unpacked.control.encode())
        if unpacked.md5sums:
            tree[status + ".md5sums"] = Entry(path=status + ".md5sums", data=unpacked.md5sums.encode())
    for directory in _deb.MERGED_DIRS:
        if f"usr/{directory}" in tree or any(p.startswith(f"usr/{directory}/") for p in tree):
            tree[directory] = Entry(path=directory, kind="symlink", target=f"usr/{directory}")
    bundle = b"".join(data if data.endswith(b"\n") else data + b"\n" for _, data in sorted(certificates))
    tree["etc/ssl/certs/ca-certificates.crt"] = Entry(path="etc/ssl/certs/ca-certificates.crt", data=bundle)
    for entry in _passwd(uid):
        tree[entry.path] = entry
    shells = [path for path in _SHELLS if path in tree]
    if shells:
        msg = f"the base would contain a shell ({', '.join(shells)}); images carry none"
        raise BuildError(msg, hint="remove the package that brings it from system.packages")
    return list(tree.values())


def runtime_entries() -> list[Entry]:
    """The server that runs in the image: omi_build/runtime, installed as `omi_runtime`."""
    entries = []
    for source in sorted(_RUNTIME_SOURCE.rglob("*.py")):
        relative = source.relative_to(_RUNTIME_SOURCE).as_posix()
        entries.append(Entry(path=f"{SITE_PACKAGES}/{RUNTIME_PACKAGE}/{relative}", data=source.read_bytes()))
    return entries


def model_file_names(directory: Path, patterns: Iterable[str], *, allow_links: bool = False) -> list[str]:
    """The files the manifest's globs select, relative to the package, sorted.

    The package is checked again here, not only by `validate`: a link or special file put in
    after validation (or hidden by the manifest cache) fails the build before anything is read.
    """
    selection = files.select(directory, patterns, allow_links=allow_links)
    if selection.refused:
        relative, why = next(iter(sorted(selection.refused.items())))
        more = f" (and {len(selection.refused) - 1} more)" if len(selection.refused) > 1 else ""
        msg = f"{relative} {why}{more}"
        raise PackageFileError(msg, hint="nothing was built; run 'omi-build validate' for every problem")
    return sorted(selection.files)


def model_file_digests(
    directory: Path, patterns: Iterable[str], *, allow_links: bool = False, known: files.Known | None = None
) -> dict[str, str]:
    """Relative path -> sha256 of every file the manifest's globs select, hashed in chunks
    (or, with `known`, remembered for a file whose stat has not changed since it was hashed)."""
    return {
        relative: files.sha256_inside(directory, relative, allow_links=allow_links, known=known)
        for relative in model_file_names(directory, patterns, allow_links=allow_links)
    }


# A model file this big gets a layer of its own (a few share one past MAX_FILE_LAYERS): a
# changed file rebuilds only its layer, and registries and runtimes fetch layers side by side.
# One file cannot span layers: each layer's tar holds whole files, and the last one wins.
BIG_FILE_BYTES = 64 << 20
MAX_FILE_LAYERS = 16


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelFiles:
    """The model's files as a build found them: every digest, and the layers of its data files
    that were built while they were hashed (one read for a changed file, none for the rest)."""

    digests: dict[str, str]
    groups: tuple[tuple[str, ...], ...]  # the data files of each layer, in layer order
    big: frozenset[tuple[str, ...]]  # the groups of big files
    built: dict[tuple[str, ...], Layer]  # layers already made, by group


def file_groups(sizes: dict[str, int]) -> list[tuple[str, ...]]:
    """The data files' layers: the small files together, then each big file alone (in path
    order, consecutive ones sharing a layer when there are more than MAX_FILE_LAYERS)."""
    small = tuple(name for name, size in sorted(sizes.items()) if size < BIG_FILE_BYTES)
    big = [name for name, size in sorted(sizes.items()) if size >= BIG_FILE_BYTES]
    per_layer = -(-len(big) // MAX_FILE_LAYERS) if big else 1
    groups = [tuple(big[start : start + per_layer]) for start in range(0, len(big), per_layer)]
    return ([small] if small else []) + groups


class RemoteCache(Protocol):
    """A build cache shared between machines (a registry's cache repo): layer records by key."""

    def fetch(self, key: str) -> str | None:
        """The record of the layer built for `key` (its blob now in the store), or None."""
        ...

    def publish(self, key: str, record: str) -> None:
        """Share the layer `record` names, unless it is shared already."""
        ...


class LayerBuilder:
    """Builds layers into a store, skipping any whose inputs were built before (here, or on
    another machine that shared them through `remote`).

    Use it as a context manager: it owns the pool that unpacks archives in the background.
    """

    def __init__(
        self,
        store: Store,
        downloads: Downloads,
        *,
        compression: Compression | Literal["auto"],
        epoch: int,
        python_version: str,
        progress: Progress,
        interpreter: Sequence[DebPackage] = (),
        remote: RemoteCache | None = None,
    ) -> None:
        self.store = store
        self.remote = remote
        self.compression = compression  # the manifest's setting: part of every layer's key
        # "auto": gzip, and big model files that do not compress in plain tar layers
        self._codec: Compression = "gzip" if compression == "auto" else compression
        self.epoch = epoch
        self.progress = progress
        self.records = store.folder("layers")
        self.unpacker = Unpacker(store, downloads, python_version=python_version, interpreter=interpreter)
        self._compressing = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="compress")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.unpacker.close()
        self._compressing.shutdown(wait=True, cancel_futures=True)

    def _key(self, inputs: Any) -> str:
        return _digest_json(
            {
                "format": LAYER_FORMAT,
                "unpack": UNPACK_FORMAT,
                "compression": self.compression,
                "epoch": self.epoch,
                "inputs": inputs,
            }
        )

    def _built(self, key: str) -> Layer | None:
        record = self.records / f"{key}.json"
        if not record.is_file():
            return None
        try:
            blob, inventory, facts = _read_record(record)
        except (OSError, ValueError, TypeError, KeyError):
            return None  # a damaged record (or one of an older format): the layer is built again
        if not self.store.has(blob.digest):
            return None
        try:
            # Re-hashed once per build: a damaged cached layer is rebuilt in this run, not
            # reported after the fact (the store removes it).
            self.store.verified(blob.digest, what=f"layer {key}")
        except FetchError:
            return None
        return Layer(name="", blob=blob, inventory=inventory, facts=facts)

    def _shared(self, key: str) -> Layer | None:
        """The layer from the remote cache, recorded here; None where it has none (call under
        the layer's store lock)."""
        if self.remote is None or (shared := self.remote.fetch(key)) is None:
            return None
        self.records.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.records / f"{key}.json", shared)
        return self._built(key)

    def _prefetch(self, key: str) -> bool:
        """Whether the layer is here now, locally built or fetched from the remote cache."""
        if self._built(key) is not None:
            return True
        with self.store.lock(f"layer-{key}"):
            return self._built(key) is not None or self._shared(key) is not None

    def layer(
        self,
        name: str,
        inputs: Any,
        build: Callable[[], list[Entry]],
        describe: Callable[[], list[Component]] = list,
        codec: Callable[[], Compression] | None = None,
    ) -> Layer:
        """The layer for `inputs`: from the cache, or built (`build` gives its entries, then
        `describe` the packages it holds, recorded with it), in the codec `codec` picks (asked
        only when the layer is built) or the builder's."""
        key = self._key(inputs)
        record_path = self.records / f"{key}.json"
        if (found := self._built(key)) is not None:
            if self.remote is not None:
                self.remote.publish(key, record_path.read_text(encoding="utf-8"))
            return dataclasses.replace(found, name=name)
        with self.store.lock(f"layer-{key}"):
            if (found := self._built(key)) is not None:
                return dataclasses.replace(found, name=name)
            if (found := self._shared(key)) is not None:
                return dataclasses.replace(found, name=name)
            self.progress.step(f"layer {name}")
            entries = build()
            facts = Facts.of(entries)
            blob = write(
                entries,
                self.store,
                compression=codec() if codec is not None else self._codec,
                epoch=self.epoch,
                pool=self._compressing,
            )
            inventory = tuple(describe())
            record = _record(blob, inventory, facts)
            self.records.mkdir(parents=True, exist_ok=True)
            atomic.write_text(record_path, record)
        if self.remote is not None:
            self.remote.publish(key, record)
        return Layer(name=name, blob=blob, inventory=inventory, facts=facts)

    def _debian_plan(self, debs: list[DebPackage], uid: int) -> tuple[Any, list[Archive]]:
        archives = [Archive.of_deb(p) for p in sorted(debs, key=lambda p: p.name)]
        inputs = {"debs": [a.sha256 for a in archives], "uid": uid, "pyc": self.unpacker.bytecode}
        return inputs, archives

    def _wheel_plan(self, wheels: list[Wheel]) -> list[tuple[str, Any, list[Archive]]]:
        heavy = sorted((w for w in wheels if w.size >= HEAVY_WHEEL_BYTES), key=lambda w: w.name)
        light = sorted((w for w in wheels if w.size < HEAVY_WHEEL_BYTES), key=lambda w: w.name)
        groups = [(w.name, [w]) for w in heavy]
        if light:
            groups.append((f"python packages ({len(light)})", light))
        plan = []
        for name, group in groups:
            inputs = {"wheels": [w.sha256 for w in group], "pyc": self.unpacker.bytecode}
            archives = [Archive.of_wheel(w) for w in group]
            plan.append((name, inputs, archives))
        return plan

    def _plans(
        self, debian: Sequence[DebPackage], wheels: Sequence[Wheel], uid: int
    ) -> list[tuple[list[Archive], bool]]:
        """Each layer's archives, and whether the layer is here (built, or fetched now from the
        remote cache, side by side)."""
        plans = [*self._wheel_plan(list(wheels))]
        if debian:
            plans.append(("debian", *self._debian_plan(list(debian), uid)))
        keys = [self._key(inputs) for _, inputs, _ in plans]
        if self.remote is None:
            here = [self._built(key) is not None for key in keys]
        else:
            with ThreadPoolExecutor(max_workers=4, thread_name_prefix="cache-repo") as pool:
                here = list(pool.map(self._prefetch, keys))
        return [(archives, done) for (_, _, archives), done in zip(plans, here, strict=True)]

    def needed(
        self, *, debian: Sequence[DebPackage] = (), wheels: Sequence[Wheel] = (), uid: int = 0
    ) -> tuple[list[DebPackage], list[Wheel]]:
        """The packages of the layers neither built here nor in the remote cache: the ones to
        download. (A layer holds all its packages or is cached whole, so the subsets keep the
        layers' keys.)"""
        wanted = {
            a.sha256 for archives, done in self._plans(debian, wheels, uid) if not done for a in archives
        }
        return [p for p in debian if p.sha256 in wanted], [w for w in wheels if w.sha256 in wanted]

    def unpack_on_arrival(
        self, *, debian: Sequence[DebPackage] = (), wheels: Sequence[Wheel] = (), uid: int = 0
    ) -> None:
        """Unpack the archives of the layers not built yet as their downloads come in."""
        unbuilt = [archives for archives, done in self._plans(debian, wheels, uid) if not done]
        self.unpacker.unpack_on_arrival([archive for archives in unbuilt for archive in archives])

    def debian(self, debs: list[DebPackage], *, uid: int) -> Layer:
        inputs, archives = self._debian_plan(debs, uid)
        by_sha = {p.sha256: p for p in debs}

        def build() -> list[Entry]:
            unpacked = [(by_sha[a.sha256], self.unpacker.get(a)) for a in archives]
            return debian_entries(unpacked, uid=uid)

        def describe() -> list[Component]:
            copyrights = _inventory.debian_copyrights(self.unpacker.get(a) for a in archives)
            return [_inventory.of_deb(by_sha[a.sha256], copyrights) for a in archives]

        return self.layer(f"debian base ({len(debs)} packages)", inputs, build, describe)

    def wheels(self, wheels: list[Wheel]) -> list[Layer]:
        by_sha = {w.sha256: w for w in wheels}

        def one(name: str, inputs: Any, archives: list[Archive]) -> Layer:
            return self.layer(
                name,
                inputs,
                lambda: [e for a in archives for e in self.unpacker.get(a).entries],
                lambda: [_inventory.of_wheel(by_sha[a.sha256], self.unpacker.get(a)) for a in archives],
            )

        # Independent layers: built side by side (decompression, compression and hashing release the GIL).
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(lambda plan: one(*plan), self._wheel_plan(wheels)))

    def runtime(self) -> Layer:
        entries = runtime_entries()
        inputs = {
            "sources": {e.path: hashlib.sha256(e.data).hexdigest() for e in entries},
            "pyc": self.unpacker.bytecode,
        }
        return self.layer(
            RUNTIME_LAYER,
            inputs,
            lambda: with_bytecode(entries, (SITE_PACKAGES,), self.unpacker.compiler),
        )

    def model_files(
        self,
        directory: Path,
        names: Sequence[str],
        *,
        known: StatCache,
        allow_links: bool = False,
        one_pass: bool = True,
    ) -> ModelFiles:
        """Every model file's digest: remembered by stat, or read. With `one_pass`, a big data
        file that changed is read once, its layer written while it is hashed."""
        digests: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for relative in names:
            with files.open_inside(directory, relative, allow_links=allow_links) as stream:
                st = os.fstat(stream.fileno())
                if not relative.endswith(".py"):
                    sizes[relative] = st.st_size
                found = known.known(relative, st)
                if found is None and (
                    not one_pass or relative.endswith(".py") or st.st_size < BIG_FILE_BYTES
                ):
                    found = known.digest(relative, stream, sha256_stream)
                if found is not None:
                    digests[relative] = "sha256:" + found
        groups = file_groups(sizes)
        big = frozenset(group for group in groups if sizes[group[0]] >= BIG_FILE_BYTES)
        built: dict[tuple[str, ...], Layer] = {}
        for group in groups:
            if any(name not in digests for name in group):
                selection = {name: digests.get(name) for name in group}
                layer, found_now = self._hashing_layer(
                    directory, selection, known=known, allow_links=allow_links, big=group in big
                )
                built[group] = layer
                digests.update(found_now)
        return ModelFiles(digests=dict(sorted(digests.items())), groups=tuple(groups), big=big, built=built)

    def _hashing_layer(
        self,
        directory: Path,
        selection: dict[str, str | None],
        *,
        known: StatCache,
        allow_links: bool,
        big: bool,
    ) -> tuple[Layer, dict[str, str]]:
        """The layer of files not all hashed yet (digest None), written while they are read:
        their digests come out of the same pass, and the layer is recorded under the key they
        give, as if it had been built from them."""
        started = time.time_ns()
        entries = self._file_entries(directory, selection, allow_links=allow_links)
        name = _files_layer_name(tuple(selection), big=big)
        self.progress.step(f"layer {name}")
        codec, sampled = self._file_codec(directory, tuple(selection), allow_links=allow_links, big=big)
        blob = write(entries, self.store, compression=codec, epoch=self.epoch, pool=self._compressing)
        found: dict[str, str] = {}
        for entry in entries:
            assert entry.source is not None  # noqa: S101 - _file_entries streams every file
            relative, digest = entry.source.name, entry.source.found["digest"]
            if relative in sampled and sampled[relative] != signature(entry.source.found["stat"]):
                # replaced between the codec's samples and the read: the codec may not fit it
                msg = f"{relative} changed while the image was being built"
                raise BuildError(msg, hint="run the build again")
            found[relative] = digest
            known.remember(
                relative, entry.source.found["stat"], digest.removeprefix("sha256:"), started_ns=started
            )
        key = self._key({"files": found})
        facts = Facts.of(entries)
        record = _record(blob, (), facts)
        with self.store.lock(f"layer-{key}"):
            self.records.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.records / f"{key}.json", record)
        if self.remote is not None:
            self.remote.publish(key, record)
        return Layer(name=name, blob=blob, facts=facts), found

    def _file_codec(
        self, directory: Path, group: tuple[str, ...], *, allow_links: bool, big: bool
    ) -> tuple[Compression, dict[str, Signature]]:
        """A big files' layer under "auto": plain tar when none of its files compresses (three
        samples of each, judged as the pieces are), so its blob is hashed once, not twice; and
        the stat of each file sampled, for the caller to see it is the file then read."""
        sampled: dict[str, Signature] = {}
        if self.compression != "auto" or not big:
            return self._codec, sampled
        for relative in group:
            with files.open_inside(directory, relative, allow_links=allow_links) as stream:
                st = os.fstat(stream.fileno())
                sampled[relative] = signature(st)
                starts = (0, st.st_size // 2, max(0, st.st_size - SAMPLE))
                sample = b"".join(os.pread(stream.fileno(), SAMPLE, start) for start in starts)
            if st.st_size <= 3 * SAMPLE or deflates(sample):
                return self._codec, sampled
        return "tar", sampled

    def _codec_of(
        self, directory: Path, group: tuple[str, ...], *, allow_links: bool, big: bool
    ) -> Compression:
        return self._file_codec(directory, group, allow_links=allow_links, big=big)[0]

    @staticmethod
    def _file_entries(directory: Path, selection: dict[str, str | None], *, allow_links: bool) -> list[Entry]:
        """Entries that stream each file while the tar is written (checked against its digest
        where it is known)."""
        entries = []
        for relative, digest in selection.items():
            with files.open_inside(directory, relative, allow_links=allow_links) as stream:
                size = os.fstat(stream.fileno()).st_size
            source = Source(
                name=relative,
                size=size,
                digest=digest,
                open=functools.partial(files.open_inside, directory, relative, allow_links=allow_links),
            )
            entries.append(Entry(path=f"{MODEL_DIR}/{relative}", source=source))
        return entries

    def model(
        self,
        directory: Path,
        found: ModelFiles,
        config: bytes,
        *,
        uid: int,
        allow_links: bool = False,
    ) -> list[Layer]:
        digests = found.digests
        code = {path: digest for path, digest in digests.items() if path.endswith(".py")}

        def code_entries(selection: dict[str, str]) -> list[Entry]:
            entries = []
            for relative, digest in selection.items():
                data = files.read_inside(directory, relative, allow_links=allow_links)
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    msg = f"{relative} changed while the image was being built"
                    raise BuildError(msg, hint="run the build again")
                entries.append(Entry(path=f"{MODEL_DIR}/{relative}", data=data))
            return entries

        layers = [
            self.layer(
                "model code",
                {"code": code, "uid": uid, "pyc": self.unpacker.bytecode},
                lambda: with_bytecode(code_entries(code), (MODEL_DIR,), self.unpacker.compiler),
            )
        ]
        for group in found.groups:
            if group in found.built:
                layers.append(found.built[group])
                continue
            selection: dict[str, str | None] = {name: digests[name] for name in group}
            big = group in found.big
            layers.append(
                self.layer(
                    _files_layer_name(group, big=big),
                    {"files": selection},
                    functools.partial(self._file_entries, directory, selection, allow_links=allow_links),
                    codec=functools.partial(
                        self._codec_of, directory, group, allow_links=allow_links, big=big
                    ),
                )
            )
        # Last and tiny: it records every file's digest, so it changes with any of them.
        layers.append(
            self.layer(
                "serving config",
                {"config": hashlib.sha256(config).hexdigest()},
                lambda: [Entry(path=CONFIG_PATH, data=config)],
            )
        )
        return layers


def _files_layer_name(group: tuple[str, ...], *, big: bool) -> str:
    """'model files' for the small ones together (the name the layer had before big files got
    layers of their own), 'model file <name>' for a big one."""
    if not big:
        return "model files"
    return f"model file {group[0]}" if len(group) == 1 else f"model files {group[0]} ... ({len(group)})"


def interpreter_packages(
    python_version: str, debs_by_platform: dict[str, Iterable[DebPackage]]
) -> list[DebPackage]:
    """The locked packages of the image's Python that this host can run, if any (see _interpreter)."""
    by_arch = {arch_of(platform): debs for platform, debs in debs_by_platform.items()}
    return _interpreter.image_packages(python_version, by_arch)
