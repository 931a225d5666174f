"""Deterministic layer tars, compressed once and named by digest.

Every entry: sorted by path, parents listed, integer mtime from SOURCE_DATE_EPOCH, numeric
owners without names, normalised modes, PAX format. gzip is written by hand around a raw
deflate stream so the header holds no time and no name; zstd frames hold no time at all.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from omi_build.fetch import Store

Kind = Literal["file", "dir", "symlink"]
Compression = Literal["gzip", "zstd"]

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One file system object of a layer; `path` is relative ('usr/bin/python3.11')."""

    path: str
    kind: Kind = "file"
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Blob:
    """A written layer: its uncompressed digest (diff_id) and its compressed blob."""

    diff_id: str
    digest: str
    size: int
    media_type: str
    files: int = 0
    uncompressed_size: int = 0


class _Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class _Gzip:
    """RFC 1952 with MTIME 0, no name, OS 'unknown': the same bytes in every build."""

    _HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, level: int) -> None:
        from isal import isal_zlib  # noqa: PLC0415 - a native extension, loaded on first use

        self._deflate = isal_zlib.compressobj(level, isal_zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0
        self._started = False

    def compress(self, data: bytes) -> bytes:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        head = b"" if self._started else self._HEADER
        self._started = True
        return head + self._deflate.compress(data)

    def flush(self) -> bytes:
        head = b"" if self._started else self._HEADER
        return head + self._deflate.flush() + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)


def _compressor(kind: Compression) -> _Compressor:
    if kind == "zstd":
        import zstandard  # noqa: PLC0415 - only zstd builds need it

        compressor: _Compressor = zstandard.ZstdCompressor(level=3).compressobj()
        return compressor
    return _Gzip(level=3)


@dataclass
class _Sink:
    """A file-like object for tarfile: hashes the tar, compresses it, stores the result."""

    compressor: _Compressor
    writer: object
    diff: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, data: bytes) -> int:
        self.diff.update(data)
        self.size += len(data)
        compressed = self.compressor.compress(data)
        if compressed:
            self.writer.write(compressed)  # type: ignore[attr-defined]
        return len(data)

    def tell(self) -> int:
        return self.size


def _with_parents(entries: Iterable[Entry]) -> list[Entry]:
    by_path: dict[str, Entry] = {}
    for entry in entries:
        by_path[entry.path.strip("/")] = entry
    for path in list(by_path):
        parent = path.rpartition("/")[0]
        while parent and parent not in by_path:
            by_path[parent] = Entry(path=parent, kind="dir", mode=0o755)
            parent = parent.rpartition("/")[0]
    return [by_path[path] for path in sorted(by_path)]


def _info(entry: Entry, epoch: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path.strip("/"))
    info.mtime = epoch
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = entry.mode & 0o7777
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        info.mode = 0o777
    else:
        info.type = tarfile.REGTYPE
        info.size = len(entry.data)
        # Executable or not; no setuid/setgid, no group or world write.
        info.mode = 0o755 if entry.mode & 0o111 else 0o644
    return info


def write(entries: Iterable[Entry], store: Store, *, compression: Compression, epoch: int) -> Blob:
    """Write one layer into the store and return its identity."""
    ordered = _with_parents(entries)
    with store.writer(what="a layer") as out:
        sink = _Sink(compressor=_compressor(compression), writer=out)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for entry in ordered:
                data = io.BytesIO(entry.data) if entry.kind == "file" else None
                tar.addfile(_info(entry, epoch), data)
        out.write(sink.compressor.flush())
    return Blob(
        diff_id="sha256:" + sink.diff.hexdigest(),
        digest="sha256:" + out.digest,
        size=out.size,
        media_type=MEDIA_TYPES[compression],
        files=len(ordered),
        uncompressed_size=sink.size,
    )
