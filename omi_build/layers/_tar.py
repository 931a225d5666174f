"""Deterministic layer tars, compressed once and named by digest.

Every entry: sorted by path, parents listed, integer mtime from SOURCE_DATE_EPOCH, numeric
owners without names, normalised modes, PAX format. The tar is compressed in pieces of 4 MiB,
each a gzip member (written by hand around raw deflate, so the header holds no time and no
name) or a zstd frame: the bytes depend only on the tar and the compressor's version.

A piece that does not compress (weights, mostly: a sample of it deflates by under a tenth) is
stored instead: a gzip member of stored deflate blocks, a zstd frame of raw blocks. The layer
keeps the codec the manifest names, so every registry and runtime that takes the image takes
it, at the cost of a copy and a CRC where deflate would spend 15 s per GB to save nothing.

One pass over the tar: the diff_id's sha256, the pieces' compression (side by side), the blob's
sha256 and its write each run on threads of their own (hashlib, the compressors and file
writes release the GIL), so a layer costs about its slowest step, not the sum of them.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from omi_build.errors import BuildError
from omi_build.store import Store

Kind = Literal["file", "dir", "symlink"]
Compression = Literal["gzip", "zstd", "tar"]  # a layer's codec; "tar": none

MEDIA_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "tar": "application/vnd.oci.image.layer.v1.tar",
}


_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class Source:
    """A file's contents read while the tar is written, in 1 MiB chunks, never whole: a
    gigabyte of weights costs a megabyte of memory. Checked against `size` and `digest` as it
    is read; a file that changed since it was hashed fails the build."""

    name: str
    size: int
    digest: str | None  # "sha256:<hex>"; None: found while the layer is written (`found`)
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    found: dict[str, Any] = field(default_factory=dict)  # once read whole: "digest", "stat" (before)

    def chunks(self) -> Iterator[bytes]:
        hasher = hashlib.sha256()
        hashing = Serial(f"sha256 {self.name}"[:15])
        read = 0
        try:
            with self.open() as stream:
                before = os.fstat(stream.fileno())
                while read < self.size and (chunk := stream.read(min(_STREAM_CHUNK, self.size - read))):
                    hashing.submit(len(chunk), hasher.update, chunk)
                    read += len(chunk)
                    yield chunk
                after = os.fstat(stream.fileno())
        finally:
            hashing.finish()
        digest = "sha256:" + hasher.hexdigest()
        still = (
            before.st_size == after.st_size == read == self.size and before.st_mtime_ns == after.st_mtime_ns
        )
        if not still or (self.digest is not None and digest != self.digest):
            msg = f"{self.name} changed while the image was being built"
            raise BuildError(msg, hint="run the build again")
        self.found["digest"] = digest
        self.found["stat"] = before


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One file system object of a layer; `path` is relative ('usr/bin/python3.11').

    A file's contents are `data`, or else streamed from `source`."""

    path: str
    kind: Kind = "file"
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0
    source: Source | None = None

    @property
    def size(self) -> int:
        if self.kind != "file":
            return 0
        return self.source.size if self.source is not None else len(self.data)


@dataclass(frozen=True, kw_only=True, slots=True)
class Blob:
    """A written layer: its uncompressed digest (diff_id) and its compressed blob."""

    diff_id: str
    digest: str
    size: int
    media_type: str
    files: int = 0
    uncompressed_size: int = 0


# Each piece of a layer's tar compresses on its own: pieces of one layer compress side by side,
# and the compressed bytes depend only on the tar's bytes, never on how it was written.
PIECE_BYTES = 4 << 20
_IN_FLIGHT = 4  # pieces of one layer compressing or waiting to be written, at most
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # MTIME 0, no name, OS unknown
SAMPLE = 8 << 10  # three samples of a piece (start, middle, end) judge whether it compresses
_STORE_ABOVE = 0.9  # a sample that deflates to over 90% of its size: the piece is stored
_STORED_BLOCK = 0xFFFF  # deflate's stored blocks hold at most 65,535 bytes
_RAW_BLOCK = 128 << 10  # zstd's raw blocks, at most the window (128 KiB here)
_ZSTD_RAW_FRAME = b"\x28\xb5\x2f\xfd\x00\x38"  # magic; no size, checksum or dict; 128 KiB window

Parts = list["bytes | memoryview"]


def _joined(parts: Parts) -> bytes:
    return parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)


def compressible(parts: Parts, size: int) -> bool:
    """Whether deflate saves a tenth of three samples of the piece (the same answer for the
    same bytes, so the layer stays reproducible)."""
    if size <= 3 * SAMPLE:
        return True  # small: compressing it costs little whatever it holds
    return deflates(b"".join(_span(parts, start, SAMPLE) for start in (0, size // 2, size - SAMPLE)))


def deflates(sample: bytes) -> bool:
    """Whether deflate (level 1) saves at least a tenth of `sample`."""
    import deflate  # noqa: PLC0415 - a native extension, loaded on first use

    return len(deflate.deflate_compress(sample, 1)) <= _STORE_ABOVE * len(sample)


def _span(parts: Parts, start: int, length: int) -> bytes:
    """`length` bytes of the piece from `start`, copied out of its parts (not the whole piece)."""
    out = []
    for part in parts:
        if start >= len(part):
            start -= len(part)
            continue
        taken = memoryview(part)[start : start + length]
        out.append(taken)
        length -= len(taken)
        start = 0
        if not length:
            break
    return b"".join(out)


def _blocks(parts: Parts, limit: int) -> list[Parts]:
    """The piece cut into blocks of `limit` bytes (the last shorter), wherever its parts end:
    the same bytes give the same blocks however they were written."""
    blocks: list[Parts] = []
    current: Parts = []
    room = limit
    for part in parts:
        view = memoryview(part)
        while view:
            take = view[:room]
            current.append(take)
            room -= len(take)
            view = view[len(take) :]
            if not room:
                blocks.append(current)
                current, room = [], limit
    if current or not blocks:
        blocks.append(current)
    return blocks


def _gzip_member(parts: Parts) -> Parts:
    """One RFC 1952 member. A gzip file may hold several; every gzip reader joins them.

    libdeflate level 1 measured 1.1 s for the iris image's 135 MB (48.6 MB out) where isal
    level 3 took 1.4 s (49.8 MB) and zlib level 6 over 4 s.
    """
    import deflate  # noqa: PLC0415 - a native extension, loaded on first use

    size = sum(len(part) for part in parts)
    crc = 0
    for part in parts:
        crc = deflate.crc32(part, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    if compressible(parts, size):
        return [_GZIP_HEADER + deflate.deflate_compress(_joined(parts), 1) + trailer]
    out: Parts = [_GZIP_HEADER]
    blocks = _blocks(parts, _STORED_BLOCK)
    for index, block in enumerate(blocks):
        final = 1 if index == len(blocks) - 1 else 0
        length = sum(len(view) for view in block)
        out += [struct.pack("<BHH", final, length, length ^ 0xFFFF), *block]
    out.append(trailer)
    return out


def _zstd_frame(parts: Parts) -> Parts:
    """One zstd frame; a zstd stream may hold several, decoded as one."""
    import zstandard  # noqa: PLC0415 - only zstd builds need it

    size = sum(len(part) for part in parts)
    if compressible(parts, size):
        return [zstandard.ZstdCompressor(level=3).compress(_joined(parts))]
    out: Parts = [_ZSTD_RAW_FRAME]
    blocks = _blocks(parts, _RAW_BLOCK)
    for index, block in enumerate(blocks):
        last = 1 if index == len(blocks) - 1 else 0
        length = sum(len(view) for view in block)
        out += [(last | length << 3).to_bytes(3, "little"), *block]  # block type 0: raw
    return out


def _plain(parts: Parts) -> Parts:
    return parts


_COMPRESSORS: dict[Compression, Callable[[Parts], Parts]] = {
    "gzip": _gzip_member,
    "zstd": _zstd_frame,
    "tar": _plain,
}


class Serial:
    """Calls run in order on a thread of their own, at most `limit` bytes of them waiting: a
    hash (or a write) that keeps pace with the reader beside it, in bounded memory."""

    def __init__(self, name: str, limit: int = 4 * PIECE_BYTES) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._waiting: deque[tuple[Future[None], int]] = deque()
        self._bytes = 0
        self._limit = limit

    def submit(self, size: int, call: Callable[..., None], *args: Any) -> None:
        self._waiting.append((self._pool.submit(call, *args), size))
        self._bytes += size
        while self._bytes > self._limit:
            future, done = self._waiting.popleft()
            self._bytes -= done
            future.result()

    def finish(self) -> None:
        """Wait for every call (raising the first failure); the thread ends either way."""
        try:
            while self._waiting:
                self._waiting.popleft()[0].result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _each(call: Callable[[Any], None], parts: Parts) -> None:
    for part in parts:
        call(part)


class _Sink:
    """Hashes the tar, cuts it into pieces, compresses them in `pool`, stores them in order."""

    def __init__(self, compression: Compression, writer: Any, pool: Executor) -> None:
        self._compress = _COMPRESSORS[compression]
        self._writer = writer
        self._pool = pool
        self._parts: Parts = []
        self._buffered = 0
        self._pending: deque[Future[Parts]] = deque()
        self.diff = hashlib.sha256()
        self._hashing = Serial("diff-id")
        self._blob_hash, self._blob_write = writer.split()
        self._blob_hashing = Serial("blob-sha256")
        self._plain = compression == "tar"
        if self._plain:  # the blob is the tar: one hash gives its digest and its diff_id
            writer.hasher = self.diff
        self._writing = Serial("blob-write")
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        view = memoryview(data)
        while self._buffered + len(view) >= PIECE_BYTES:
            take = PIECE_BYTES - self._buffered
            self._submit([*self._parts, view[:take]])
            self._parts, self._buffered = [], 0
            view = view[take:]
        if view:
            self._parts.append(view)
            self._buffered += len(view)

    def _submit(self, parts: Parts) -> None:
        size = sum(len(part) for part in parts)
        self._hashing.submit(size, _each, self.diff.update, parts)
        self._pending.append(self._pool.submit(self._compress, parts))
        while len(self._pending) > _IN_FLIGHT:
            self._write(self._pending.popleft().result())

    def _write(self, parts: Parts) -> None:
        size = sum(len(part) for part in parts)
        if not self._plain:
            self._blob_hashing.submit(size, _each, self._blob_hash, parts)
        self._writing.submit(size, _each, self._blob_write, parts)

    def _end_threads(self) -> Exception | None:
        """Wait for every thread to end; the first failure among them, if any."""
        failures = []
        for serial in (self._hashing, self._blob_hashing, self._writing):
            try:
                serial.finish()
            except Exception as exc:  # noqa: BLE001 - each thread ends; the first failure is kept
                failures.append(exc)
        return failures[0] if failures else None

    def abandon(self) -> None:
        for future in self._pending:
            future.cancel()
        self._end_threads()  # the failure that got us here is the one to report

    def close(self) -> None:
        try:
            if self._parts or not self.size:
                self._submit(self._parts or [b""])
                self._parts, self._buffered = [], 0
            while self._pending:
                self._write(self._pending.popleft().result())
        finally:
            failure = self._end_threads()
        if failure is not None:
            raise failure


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


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar's record: an archive ends on a multiple of it
_SMALL = 64 << 10
_TYPES = {"file": b"0", "dir": b"5", "symlink": b"2"}
_MAGIC = b"ustar\x0000"


def _field(text: bytes, length: int) -> bytes:
    return text[:length].ljust(length, b"\0")


def _octal(value: int, digits: int) -> bytes:
    return b"%0*o\0" % (digits - 1, value)


def _block(  # noqa: PLR0917 - the header's fields, in the header's order
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, link: bytes
) -> bytes:
    header = b"".join(
        (
            _field(name, 100),
            _octal(mode, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(mtime, 12),
            b"        ",  # the checksum, counted as spaces
            kind,
            _field(link, 100),
            _MAGIC,
            bytes(32 + 32 + 8 + 8 + 155),  # no user or group names, no device, no prefix
        )
    ).ljust(_BLOCK, b"\0")
    checksum = b"%06o\0" % sum(header)
    return header[:148] + checksum + header[155:]


def _pax_record(keyword: str, value: str) -> bytes:
    body = f" {keyword}={value}\n".encode()
    length = len(body)
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


WORLD_WRITABLE_DIR = "tmp"  # the one path anyone may write (sticky, 1777)


def directory_mode(entry: Entry) -> int:
    """A folder's mode in the image: owner's bits kept, no setuid or setgid, no group or world
    write, except /tmp (1777). Debian ships /var/tmp and /var/lock 1777 and /var/local 2775;
    with a read-only root they serve no one, and a writable folder is a place to plant files."""
    if entry.path.strip("/") == WORLD_WRITABLE_DIR:
        return 0o1777
    return entry.mode & 0o755


def header(entry: Entry, epoch: int) -> bytes:
    """The tar header of one entry, PAX where ustar's fields are too small.

    Byte for byte what Python's tarfile writes in PAX_FORMAT for the same member (a test holds
    it), at a fraction of the cost: a layer has thousands of entries.
    """
    name = entry.path.strip("/") + ("/" if entry.kind == "dir" else "")
    size = entry.size
    if entry.kind == "dir":
        mode = directory_mode(entry)
    elif entry.kind == "symlink":
        mode = 0o777
    else:
        # Executable or not; no setuid/setgid, no group or world write.
        mode = 0o755 if entry.mode & 0o111 else 0o644
    link = entry.target if entry.kind == "symlink" else ""
    pax = b""
    if not name.isascii() or len(name) > 100:
        pax += _pax_record("path", name)
    if not link.isascii() or len(link) > 100:
        pax += _pax_record("linkpath", link)
    if size >= 8**11:
        pax += _pax_record("size", str(size))
        size = 0
    prefix = b""
    if pax:
        padding = bytes(-len(pax) % _BLOCK)
        prefix = _block(b"././@PaxHeader", 0, 0, 0, len(pax), 0, b"x", b"") + pax + padding
    encoded_name = name.encode("ascii", "replace")
    encoded_link = link.encode("ascii", "replace")
    kind = _TYPES[entry.kind]
    return prefix + _block(encoded_name, mode, entry.uid, entry.gid, size, epoch, kind, encoded_link)


def _tar_parts(ordered: Iterable[Entry], epoch: int) -> Iterator[bytes]:
    """The archive as headers, contents and padding, in order (large contents are not copied)."""
    total = 0
    for entry in ordered:
        head = header(entry, epoch)
        if entry.kind == "file" and entry.source is not None:
            yield head
            yield from entry.source.chunks()
            padding = -entry.source.size % _BLOCK
            if padding:
                yield bytes(padding)
            total += len(head) + entry.source.size + padding
            continue
        data = entry.data if entry.kind == "file" else b""
        padding = -len(data) % _BLOCK
        if len(data) < _SMALL:
            yield head + data + bytes(padding)  # one part rather than three: fewer calls
        else:
            yield head
            yield data
            if padding:
                yield bytes(padding)
        total += len(head) + len(data) + padding
    total += 2 * _BLOCK
    yield bytes(2 * _BLOCK + (-total % _RECORD))


def write(
    entries: Iterable[Entry],
    store: Store,
    *,
    compression: Compression,
    epoch: int,
    pool: Executor | None = None,
) -> Blob:
    """Write one layer into the store and return its identity.

    Pieces compress in `pool` (threads: the compressors release the GIL), else one at a time.
    """
    ordered = _with_parents(entries)
    # Not synced before the rename (a gigabyte's fsync took 0.6 s here): a layer is derived,
    # and after a crash an unsynced blob is shorter on disk than its stat cache entry says
    # (ext4, XFS and btrfs commit a file's size only with its data), so it is hashed again,
    # found wrong, removed and rebuilt.
    with store.writer(what="a layer", durable=False, remember=True) as out:
        sink = _Sink(compression, out, pool or _Inline())
        try:
            for part in _tar_parts(ordered, epoch):
                sink.write(part)
        except BaseException:
            sink.abandon()  # its threads end; the half-written blob goes with the writer
            raise
        sink.close()
    return Blob(
        diff_id="sha256:" + sink.diff.hexdigest(),
        digest="sha256:" + out.digest,
        size=out.size,
        media_type=MEDIA_TYPES[compression],
        files=len(ordered),
        uncompressed_size=sink.size,
    )


class _Inline(Executor):
    """Runs each task at once in the caller's thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future
