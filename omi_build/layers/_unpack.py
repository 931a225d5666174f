"""Each downloaded archive unpacked once: the files it puts in the image, and their bytecode.

A .deb or a wheel becomes the entries it adds to the image (merged-/usr paths, site-packages),
without what is never used when serving, plus compiled .pyc for its Python sources. The result
is kept beside the archive in the download cache, under the archive's digest, so rebuilding a
layer from the same downloads (a new epoch, another uid, a new builder layer format, the next
platform of an architecture-independent package) reads it instead of decompressing and
compiling again.

Stored form: a magic line, the length of a JSON index, the index (control data and one
[path, kind, mode, target, size] row per entry), then the file contents back to back. The blob
lives in the content-addressed store and is re-hashed when read; a record maps the archive to it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import sys
import threading
import zipfile
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from omi_build.errors import BuildError
from omi_build.fetch import Store

from . import _deb, _pyc
from ._tar import Entry

# Bump when the same archive would now unpack to different entries.
UNPACK_FORMAT = 1
SITE_PACKAGES = "usr/lib/python3/dist-packages"
_MAGIC = b"omi-build unpacked 1\n"

ArchiveKind = Literal["deb", "wheel"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Archive:
    """A downloaded .deb or wheel, named by the sha256 the lock pins."""

    kind: ArchiveKind
    sha256: str
    what: str
    size: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Unpacked:
    entries: tuple[Entry, ...]
    control: str = ""
    md5sums: str = ""


def with_bytecode(
    entries: Iterable[Entry], python_version: str, roots: tuple[str, ...], cache: Path | None = None
) -> list[Entry]:
    """`entries` plus a .pyc for each Python source under `roots` (tests excluded)."""
    entries = list(entries)
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


def pyc_identity(python_version: str) -> str | None:
    """What the bytecode depends on: the compiling interpreter, or None when none is made."""
    return sys.version if _pyc.can_compile_for(python_version) else None


def deb(path: Path, what: str, *, python_version: str, pyc_cache: Path | None = None) -> Unpacked:
    """A .deb's files as the image holds them, with bytecode for the stdlib's sources."""
    package = _deb.read(path, what)
    # Administration tools: nothing runs them in a container.
    kept = [entry for entry in package.entries if not entry.path.startswith("usr/sbin/")]
    stdlib = (f"usr/lib/python{python_version}/",)
    return Unpacked(
        entries=tuple(with_bytecode(kept, python_version, stdlib, pyc_cache)),
        control=package.control,
        md5sums=package.md5sums,
    )


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


def wheel(path: Path, what: str, *, python_version: str, pyc_cache: Path | None = None) -> Unpacked:
    """A wheel's files in site-packages, with bytecode for its sources."""
    entries = wheel_entries(path, what)
    return Unpacked(entries=tuple(with_bytecode(entries, python_version, (SITE_PACKAGES,), pyc_cache)))


def encode(unpacked: Unpacked) -> list[bytes]:
    """The stored form, in parts to write one after the other."""
    rows = [[e.path, e.kind, e.mode, e.target, len(e.data)] for e in unpacked.entries]
    index = json.dumps(
        {"control": unpacked.control, "md5sums": unpacked.md5sums, "entries": rows},
        separators=(",", ":"),
    ).encode()
    return [_MAGIC + len(index).to_bytes(8, "little") + index, *(e.data for e in unpacked.entries if e.data)]


def decode(data: bytes) -> Unpacked:
    """The stored form back; ValueError when it is not one (a truncated or foreign file)."""
    if not data.startswith(_MAGIC):
        msg = "not an unpacked archive"
        raise ValueError(msg)
    start = len(_MAGIC) + 8
    length = int.from_bytes(data[len(_MAGIC) : start], "little")
    index = json.loads(data[start : start + length])
    position = start + length
    entries = []
    for path, kind, mode, target, size in index["entries"]:
        content = data[position : position + size]
        entries.append(Entry(path=path, kind=kind, mode=mode, target=target, data=content))
        position += size
    if position != len(data):
        msg = "unpacked archive has trailing or missing bytes"
        raise ValueError(msg)
    return Unpacked(entries=tuple(entries), control=index["control"], md5sums=index["md5sums"])


class Unpacker:
    """Unpacks archives on background threads, each once per build, through the cache.

    `prefetch` queues an archive as soon as it is downloaded, so unpacking overlaps the
    downloads still running; the largest queued archive goes first, as it ends last otherwise.
    `get` waits for it.
    """

    def __init__(self, store: Store, *, python_version: str) -> None:
        self.store = store
        self.python_version = python_version
        self.records = store.root / "unpacked"
        self.pyc_cache = store.root / "pyc"
        self._queue: queue.PriorityQueue[tuple[int, int, Archive | None]] = queue.PriorityQueue()
        self._started: dict[str, Future[Unpacked]] = {}
        self._mutex = threading.Lock()
        self._order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name=f"unpack-{n}", daemon=True)
            for n in range(os.cpu_count() or 1)
        ]
        for worker in self._workers:
            worker.start()

    def close(self) -> None:
        """Stop the workers; archives still queued are not unpacked."""
        for _ in self._workers:
            self._queue.put((-(1 << 62), next(self._order), None))
        for worker in self._workers:
            worker.join()
        for future in self._started.values():
            future.cancel()
        self._started.clear()

    def prefetch(self, archive: Archive) -> None:
        with self._mutex:
            if archive.sha256 in self._started:
                return
            self._started[archive.sha256] = Future()
        self._queue.put((-archive.size, next(self._order), archive))

    def get(self, archive: Archive) -> Unpacked:
        self.prefetch(archive)
        return self._started[archive.sha256].result()

    def _work(self) -> None:
        while (archive := self._queue.get()[2]) is not None:
            future = self._started.get(archive.sha256)
            if future is None or not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._unpack(archive))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                future.set_exception(exc)

    def _key(self, archive: Archive) -> str:
        identity = {
            "format": UNPACK_FORMAT,
            "kind": archive.kind,
            "archive": archive.sha256,
            "python": self.python_version,
            "pyc": pyc_identity(self.python_version),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _cached(self, record: Path) -> Unpacked | None:
        """The stored form, if its record and blob are intact; a damaged one is dropped."""
        try:
            digest = json.loads(record.read_text(encoding="utf-8"))["digest"]
            data = self.store.path_for(digest).read_bytes()
            if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                self.store.path_for(digest).unlink(missing_ok=True)
                return None
            return decode(data)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _unpack(self, archive: Archive) -> Unpacked:
        record = self.records / f"{self._key(archive)}.json"
        if (found := self._cached(record)) is not None:
            return found
        path = self.store.verified(archive.sha256, what=archive.what)
        read = deb if archive.kind == "deb" else wheel
        unpacked = read(path, archive.what, python_version=self.python_version, pyc_cache=self.pyc_cache)
        # Not synced to disk: it is checked against its digest whenever it is read.
        with self.store.writer(durable=False) as out:
            for part in encode(unpacked):
                out.write(part)
        self.records.mkdir(parents=True, exist_ok=True)
        temporary = record.with_name(f".{record.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps({"digest": "sha256:" + out.digest}), encoding="utf-8")
        temporary.replace(record)
        return unpacked
