"""The image's layers, ordered by how often they change, each built once per set of inputs.

    debian base  ->  heavy wheels (one each)  ->  other wheels  ->  server runtime
    ->  model code (+ serving config)  ->  model files

A layer's cache key is the digest of its inputs (locked hashes, file contents, the builder's
layer format); a hit reuses the compressed blob without reading any input again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from omi_build.errors import BuildError
from omi_build.fetch import Store
from omi_build.lock import DebPackage, Wheel
from omi_build.progress import Progress

from . import _deb, _pyc
from ._tar import Blob, Compression, Entry, write

# Bump when the same inputs would now give different layer bytes.
LAYER_FORMAT = 4
SITE_PACKAGES = "usr/lib/python3/dist-packages"
RUNTIME_PACKAGE = "omi_runtime"
MODEL_DIR = "opt/omi/model"
CONFIG_PATH = "opt/omi/omi.json"
HEAVY_WHEEL_BYTES = 10 * 1024 * 1024
_SHELLS = ("usr/bin/sh", "usr/bin/bash", "usr/bin/dash", "usr/bin/busybox", "usr/bin/zsh")
_RUNTIME_SOURCE = Path(__file__).resolve().parent.parent / "runtime"

__all__ = ["Blob", "Entry", "Layer", "LayerBuilder"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Layer:
    name: str
    blob: Blob


def _digest_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pyc_identity(python_version: str) -> str | None:
    """What the bytecode depends on: the compiling interpreter, or None when none is made."""
    return sys.version if _pyc.can_compile_for(python_version) else None


def _with_bytecode(
    entries: list[Entry], python_version: str, roots: tuple[str, ...], cache: Path | None = None
) -> list[Entry]:
    if not _pyc.can_compile_for(python_version):
        return entries
    sources = [
        (e.path, e.data)
        for e in entries
        if e.kind == "file"
        and e.path.endswith(".py")
        and e.path.startswith(roots)
        and "/tests/" not in e.path
        and "/test/" not in e.path  # never imported when serving
    ]
    return entries + [Entry(path=path, data=data) for path, data in _pyc.compile_all(sources, cache)]


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


def debian_entries(
    debs: Iterable[tuple[DebPackage, Path]], *, uid: int, python_version: str, pyc_cache: Path | None = None
) -> list[Entry]:
    """The distroless-style base: package files plus what maintainer scripts would have made."""
    tree: dict[str, Entry] = {}
    certificates: list[tuple[str, bytes]] = []
    ordered = sorted(debs, key=lambda item: item[0].name)
    # xz decompression releases the GIL: read the packages side by side, merge them in order.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        read = list(pool.map(lambda item: _deb.read(item[1], f"{item[0].name} {item[0].version}"), ordered))
    for (package, _), deb in zip(ordered, read, strict=True):
        for entry in deb.entries:
            if entry.path.startswith("usr/sbin/"):
                continue  # administration tools; nothing runs them in a container
            if entry.kind == "dir" and entry.path in tree:
                continue
            tree[entry.path] = entry
            if entry.path.startswith("usr/share/ca-certificates/") and entry.path.endswith(".crt"):
                certificates.append((entry.path, entry.data))
        status = f"var/lib/dpkg/status.d/{package.name}"
        tree[status] = Entry(path=status, data=deb.control.encode())
        if deb.md5sums:
            tree[status + ".md5sums"] = Entry(path=status + ".md5sums", data=deb.md5sums.encode())
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
    stdlib = (f"usr/lib/python{python_version}/",)
    return _with_bytecode(list(tree.values()), python_version, stdlib, pyc_cache)


def wheel_entries(path: Path, what: str) -> list[Entry]:
    """A wheel installed into the image's site-packages, as pip would, less its test suite.

    Scripts are left out too: nothing could run them without a shell.
    """
    entries = []
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        msg = f"{what} is not a valid wheel"
        raise BuildError(msg) from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename
            parts = PurePosixPath(name).parts
            if ".." in parts or name.startswith("/"):
                msg = f"{what} holds an unsafe path: {name}"
                raise BuildError(msg)
            if "tests" in parts[:-1]:
                continue  # a package's own test suite: never imported when serving (numpy: 7 MB)
            if parts[0].endswith(".data") and len(parts) > 2:
                if parts[1] not in {"purelib", "platlib"}:
                    continue  # scripts, headers and data files: not needed to import the package
                name = "/".join(parts[2:])
            mode = (info.external_attr >> 16) & 0o777 or 0o644
            entries.append(Entry(path=f"{SITE_PACKAGES}/{name}", mode=mode, data=archive.read(info)))
    return entries


def runtime_entries() -> list[Entry]:
    """The server that runs in the image: omi_build/runtime, installed as `omi_runtime`."""
    entries = []
    for source in sorted(_RUNTIME_SOURCE.rglob("*.py")):
        relative = source.relative_to(_RUNTIME_SOURCE).as_posix()
        entries.append(Entry(path=f"{SITE_PACKAGES}/{RUNTIME_PACKAGE}/{relative}", data=source.read_bytes()))
    return entries


def model_file_digests(directory: Path, patterns: Iterable[str]) -> dict[str, str]:
    """Relative path -> sha256 of every file the manifest's globs select."""
    found: dict[str, str] = {}
    for pattern in patterns:
        for match in sorted(directory.glob(pattern)):
            if match.is_file():
                relative = match.relative_to(directory).as_posix()
                if relative not in found:
                    found[relative] = "sha256:" + hashlib.sha256(match.read_bytes()).hexdigest()
    return dict(sorted(found.items()))


class LayerBuilder:
    """Builds layers into a store, skipping any whose inputs were built before."""

    def __init__(self, store: Store, *, compression: Compression, epoch: int, progress: Progress) -> None:
        self.store = store
        self.compression: Compression = compression
        self.epoch = epoch
        self.progress = progress
        self.records = store.root / "layers"
        self.pyc_cache = store.root / "pyc"

    def layer(self, name: str, inputs: Any, build: Callable[[], list[Entry]]) -> Layer:
        key = _digest_json(
            {
                "format": LAYER_FORMAT,
                "compression": self.compression,
                "epoch": self.epoch,
                "inputs": inputs,
            }
        )
        record = self.records / f"{key}.json"
        if record.is_file():
            blob = Blob(**json.loads(record.read_text(encoding="utf-8")))
            if self.store.has(blob.digest):
                return Layer(name=name, blob=blob)
        with self.store.lock(f"layer-{key}"):
            if record.is_file():
                blob = Blob(**json.loads(record.read_text(encoding="utf-8")))
                if self.store.has(blob.digest):
                    return Layer(name=name, blob=blob)
            self.progress.step(f"layer {name}")
            blob = write(build(), self.store, compression=self.compression, epoch=self.epoch)
            self.records.mkdir(parents=True, exist_ok=True)
            temporary = record.with_name(f".{key}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(dataclasses.asdict(blob), sort_keys=True), encoding="utf-8")
            temporary.replace(record)
        return Layer(name=name, blob=blob)

    def debian(self, debs: list[tuple[DebPackage, Path]], *, uid: int, python_version: str) -> Layer:
        inputs = {
            "debs": [p.sha256 for p, _ in sorted(debs, key=lambda d: d[0].name)],
            "uid": uid,
            "pyc": _pyc_identity(python_version),
        }

        def build() -> list[Entry]:
            checked = [(p, self.store.verified(p.sha256, what=f"{p.name} {p.version}")) for p, _ in debs]
            return debian_entries(checked, uid=uid, python_version=python_version, pyc_cache=self.pyc_cache)

        return self.layer(f"debian base ({len(debs)} packages)", inputs, build)

    def wheels(self, wheels: list[tuple[Wheel, Path]], *, python_version: str) -> list[Layer]:
        heavy = [item for item in wheels if item[0].size >= HEAVY_WHEEL_BYTES]
        light = [item for item in wheels if item[0].size < HEAVY_WHEEL_BYTES]
        groups = [[item] for item in sorted(heavy, key=lambda w: w[0].name)]
        if light:
            groups.append(sorted(light, key=lambda w: w[0].name))

        def one(group: list[tuple[Wheel, Path]]) -> Layer:
            alone = len(group) == 1 and group[0] in heavy
            name = group[0][0].name if alone else f"python packages ({len(group)})"

            def build() -> list[Entry]:
                entries = [
                    entry
                    for wheel, _ in group
                    for entry in wheel_entries(
                        self.store.verified(wheel.sha256, what=wheel.filename), wheel.filename
                    )
                ]
                return _with_bytecode(entries, python_version, (SITE_PACKAGES,), self.pyc_cache)

            inputs = {"wheels": [w.sha256 for w, _ in group], "pyc": _pyc_identity(python_version)}
            return self.layer(name, inputs, build)

        # Independent layers: built side by side (zlib, isal and hashing release the GIL).
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(one, groups))

    def runtime(self, *, python_version: str) -> Layer:
        entries = runtime_entries()
        inputs = {
            "sources": {e.path: hashlib.sha256(e.data).hexdigest() for e in entries},
            "pyc": _pyc_identity(python_version),
        }
        return self.layer(
            "server runtime",
            inputs,
            lambda: _with_bytecode(entries, python_version, (SITE_PACKAGES,)),
        )

    def model(
        self,
        directory: Path,
        digests: dict[str, str],
        config: bytes,
        *,
        uid: int,
        python_version: str,
    ) -> list[Layer]:
        code = {path: digest for path, digest in digests.items() if path.endswith(".py")}
        files = {path: digest for path, digest in digests.items() if not path.endswith(".py")}

        def entries_for(selection: dict[str, str]) -> list[Entry]:
            entries = []
            for relative, digest in selection.items():
                data = (directory / relative).read_bytes()
                if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                    msg = f"{relative} changed while the image was being built"
                    raise BuildError(msg, hint="run the build again")
                entries.append(Entry(path=f"{MODEL_DIR}/{relative}", data=data))
            return entries

        layers = [
            self.layer(
                "model code",
                {"code": code, "uid": uid, "pyc": _pyc_identity(python_version)},
                lambda: _with_bytecode(entries_for(code), python_version, (MODEL_DIR,)),
            )
        ]
        if files:
            layers.append(self.layer("model files", {"files": files}, lambda: entries_for(files)))
        # Last and tiny: it records every file's digest, so it changes with any of them.
        layers.append(
            self.layer(
                "serving config",
                {"config": hashlib.sha256(config).hexdigest()},
                lambda: [Entry(path=CONFIG_PATH, data=config)],
            )
        )
        return layers
