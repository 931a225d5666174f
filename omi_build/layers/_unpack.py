"""Each downloaded archive unpacked once: the files it puts in the image, and their bytecode.

A .deb or a wheel becomes the entries it adds to the image (merged-/usr paths, site-packages),
without what is never used when serving, plus compiled .pyc for its Python sources. The result
is kept beside the archive in the download cache, under the archive's digest, so rebuilding a
layer from the same downloads (a new epoch, another uid, a new builder layer format, the next
platform of an architecture-independent package) reads it instead of decompressing and
compiling again.

Stored form, in `<cache>/unpacked/<key>`: a magic line, a crc32 of the rest (checked on every
read: a damaged entry is unpacked again), the length of a JSON index, the index (control data
and one [path, kind, mode, target, size] row per entry), then the file contents back to back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import os
import queue
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Self

import deflate

from omi_build import atomic
from omi_build.download import Downloads
from omi_build.errors import BuildError
from omi_build.lock import DebPackage, Wheel
from omi_build.store import Store

from . import _deb, _interpreter, _pyc
from ._tar import Entry

# Bump when the same archive would now unpack to different entries.
UNPACK_FORMAT = 1
SITE_PACKAGES = "usr/lib/python3/dist-packages"
_MAGIC = b"omi-build unpacked 1\n"  # then a crc32 of the rest

ArchiveKind = Literal["deb", "wheel"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Archive:
    """A downloaded .deb or wheel, named by the sha256 the lock pins."""

    kind: ArchiveKind
    sha256: str
    what: str
    size: int = 0

    @classmethod
    def of_deb(cls, package: DebPackage) -> Archive:
        return cls(
            kind="deb", sha256=package.sha256, what=f"{package.name} {package.version}", size=package.size
        )

    @classmethod
    def of_wheel(cls, wheel: Wheel) -> Archive:
        return cls(kind="wheel", sha256=wheel.sha256, what=wheel.filename, size=wheel.size)


@dataclass(frozen=True, kw_only=True, slots=True)
class Unpacked:
    entries: tuple[Entry, ...]
    control: str = ""
    md5sums: str = ""


def with_bytecode(
    entries: Iterable[Entry],
    roots: tuple[str, ...],
    compiler: Callable[[], _pyc.Compiler | None],
    shared: _pyc.Shared | None = None,
) -> list[Entry]:
    """`entries` plus a .pyc for each Python source under `roots` (tests excluded).

    `compiler` is asked only when there is something to compile.
    """
    entries = list(entries)
    sources = [
        (e.path, e.data)
        for e in entries
        if e.kind == "file"
        and e.path.endswith(".py")
        and e.path.startswith(roots)
        and "/tests/" not in e.path
        and "/test/" not in e.path  # never imported when serving
    ]
    if not sources or (chosen := compiler()) is None:
        return entries
    return entries + [Entry(path=path, data=data) for path, data in _pyc.compile_all(sources, chosen, shared)]


def extract_deb(path: Path, what: str) -> Unpacked:
    """A .deb's files as the image holds them (no bytecode yet)."""
    package = _deb.read(path, what)
    # Administration tools: nothing runs them in a container.
    kept = [entry for entry in package.entries if not entry.path.startswith("usr/sbin/")]
    return Unpacked(entries=tuple(kept), control=package.control, md5sums=package.md5sums)


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # a zip member's local header: 30 bytes


def _member(archive: bytes, info: zipfile.ZipInfo, what: str) -> bytes:
    """One member's bytes, inflated with libdeflate (about twice zlib's speed), CRC checked."""
    header = _LOCAL_HEADER.unpack_from(archive, info.header_offset)
    start = info.header_offset + _LOCAL_HEADER.size + header[9] + header[10]
    raw = archive[start : start + info.compress_size]
    if info.flag_bits & 0x1 or info.compress_type not in {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}:
        msg = f"{what}: {info.filename} is encrypted or compressed in an unsupported way"
        raise BuildError(msg)
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            data = raw
        else:
            data = bytes(deflate.deflate_decompress(raw, info.file_size))
    except deflate.DeflateError as exc:
        msg = f"{what} is damaged: {info.filename} does not inflate"
        raise BuildError(msg) from exc
    if header[0] != b"PK\x03\x04" or len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        msg = f"{what} is damaged: {info.filename} fails its CRC check"
        raise BuildError(msg)
    return data


def wheel_entries(path: Path, what: str) -> list[Entry]:
    """A wheel installed into the image's site-packages, as pip would, less its test suite.

    Scripts are left out too: nothing could run them without a shell.
    """
    archive = path.read_bytes()
    try:
        members = zipfile.ZipFile(io.BytesIO(archive)).infolist()
    except zipfile.BadZipFile as exc:
        msg = f"{what} is not a valid wheel"
        raise BuildError(msg) from exc
    entries = []
    for info in members:
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
        entries.append(Entry(path=f"{SITE_PACKAGES}/{name}", mode=mode, data=_member(archive, info, what)))
    return entries


def extract_wheel(path: Path, what: str) -> Unpacked:
    """A wheel's files in site-packages (no bytecode yet)."""
    return Unpacked(entries=tuple(wheel_entries(path, what)))


def encode(unpacked: Unpacked) -> list[bytes]:
    """The stored form, in parts to write one after the other."""
    rows = [[e.path, e.kind, e.mode, e.target, len(e.data)] for e in unpacked.entries]
    index = json.dumps(
        {"control": unpacked.control, "md5sums": unpacked.md5sums, "entries": rows},
        separators=(",", ":"),
    ).encode()
    body = [len(index).to_bytes(8, "little") + index, *(e.data for e in unpacked.entries if e.data)]
    checksum = 0
    for part in body:
        checksum = zlib.crc32(part, checksum)
    return [_MAGIC + checksum.to_bytes(4, "little"), *body]


def decode(data: bytes) -> Unpacked:
    """The stored form back; ValueError when it is not one (truncated, damaged or foreign)."""
    start = len(_MAGIC) + 4
    if not data.startswith(_MAGIC) or zlib.crc32(memoryview(data)[start:]) != int.from_bytes(
        data[len(_MAGIC) : start], "little"
    ):
        msg = "not an intact unpacked archive"
        raise ValueError(msg)
    length = int.from_bytes(data[start : start + 8], "little")
    index = json.loads(data[start + 8 : start + 8 + length])
    position = start + 8 + length
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

    `unpack_on_arrival` queues archives as `downloads` brings them in, so unpacking overlaps
    the downloads still running; the largest queued archive goes first, as it ends last
    otherwise. `get` waits for one. Bytecode comes from `compiler()`: the image's interpreter
    (the locked `interpreter` packages) where the host runs it, else the host's (see
    _interpreter).
    """

    def __init__(
        self,
        store: Store,
        downloads: Downloads,
        *,
        python_version: str,
        interpreter: Sequence[DebPackage] = (),
    ) -> None:
        self.store = store
        self.downloads = downloads
        self.python_version = python_version
        self.folder = store.folder("unpacked")
        self.bytecode = _interpreter.identity(python_version, list(interpreter))
        self._interpreter = tuple(interpreter)
        self._compiler: _pyc.Compiler | None = None
        self._compiler_made = False
        self._compiler_lock = threading.Lock()
        self._shared: _pyc.Shared = {}
        self._queue: queue.PriorityQueue[tuple[int, int, Archive | None]] = queue.PriorityQueue()
        self._started: dict[str, Future[Unpacked]] = {}
        self._extracting: dict[str, Future[Unpacked]] = {}
        self._mutex = threading.Lock()
        self._order = itertools.count()
        self._workers = [
            threading.Thread(target=self._work, name=f"unpack-{n}", daemon=True)
            for n in range(os.cpu_count() or 1)
        ]
        for worker in self._workers:
            worker.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (archives still queued are not unpacked) and clean up."""
        for _ in self._workers:
            self._queue.put((-(1 << 62), next(self._order), None))
        for worker in self._workers:
            worker.join()
        for future in self._started.values():
            future.cancel()
        self._started.clear()
        self._extracting.clear()

    def unpack_on_arrival(self, archives: Sequence[Archive]) -> None:
        """Queue each archive as soon as its download is in (at once for those stored)."""
        by_digest = {a.sha256: a for a in archives}

        def feed() -> None:
            for digest in self.downloads.arrivals(by_digest):
                self.prefetch(by_digest[digest])

        threading.Thread(target=feed, name="unpack-feed", daemon=True).start()

    def prefetch(self, archive: Archive) -> None:
        with self._mutex:
            if archive.sha256 in self._started:
                return
            self._started[archive.sha256] = Future()
        self._queue.put((-archive.size, next(self._order), archive))

    def get(self, archive: Archive) -> Unpacked:
        self.prefetch(archive)
        return self._started[archive.sha256].result()

    def compiler(self) -> _pyc.Compiler | None:
        """The interpreter that compiles the image's bytecode, made ready on first use."""
        with self._compiler_lock:
            if not self._compiler_made:
                self._compiler = self._make_compiler()
                self._compiler_made = True
            return self._compiler

    def _make_compiler(self) -> _pyc.Compiler | None:
        if not self._interpreter:
            return _pyc.host_compiler(self.python_version)

        archives = [Archive.of_deb(package) for package in self._interpreter]

        def contents() -> Iterator[tuple[Entry, ...]]:
            return (self._entries_of(archive).entries for archive in archives)

        arch = self._interpreter[0].architecture
        name = _interpreter.describe(self.python_version, list(self._interpreter))
        folder = self.store.folder("interpreters")
        return _interpreter.materialize(
            self.python_version, arch, contents, folder, self.bytecode or "", name
        )

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
            "bytecode": self.bytecode,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _cached(self, path: Path) -> Unpacked | None:
        """The stored form, if intact; a damaged one is removed."""
        try:
            return decode(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return None

    def _extracted(self, archive: Archive) -> Unpacked:
        """The archive's files without bytecode, extracted once per build.

        The first caller extracts in its own thread; later ones wait for it. Extraction never
        waits for anything but the download, so waiting on it cannot deadlock.
        """
        with self._mutex:
            future = self._extracting.get(archive.sha256)
            mine = future is None
            if future is None:
                future = self._extracting[archive.sha256] = Future()
        if not mine:
            return future.result()
        try:
            extracted = self._extract(archive)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(extracted)
        return extracted

    def _extract(self, archive: Archive) -> Unpacked:
        self.downloads.wait(archive.sha256, what=archive.what)
        path = self.store.verified(archive.sha256, what=archive.what)
        return (extract_deb if archive.kind == "deb" else extract_wheel)(path, archive.what)

    def _entries_of(self, archive: Archive) -> Unpacked:
        """The archive's files, from the cache when it has them (bytecode does no harm here)."""
        return self._cached(self.folder / self._key(archive)) or self._extracted(archive)

    def _unpack(self, archive: Archive) -> Unpacked:
        stored = self.folder / self._key(archive)
        if (found := self._cached(stored)) is not None:
            return found
        extracted = self._extracted(archive)
        roots = (f"usr/lib/python{self.python_version}/",) if archive.kind == "deb" else (SITE_PACKAGES,)
        unpacked = dataclasses.replace(
            extracted, entries=tuple(with_bytecode(extracted.entries, roots, self.compiler, self._shared))
        )
        # Written, then renamed into place; not synced: a checksum is checked whenever it is read.
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic.replacing(stored) as out:
            for part in encode(unpacked):
                out.write(part)
        return unpacked
