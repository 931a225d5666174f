"""Digests of files that have not changed since they were hashed, known from their stat alone.

As git's index and Bazel do: a file's (device, inode, size, mtime, ctime) when it was hashed
is kept with its digest, and a file whose stat is the same again is not read again. A write
moves mtime, replacing the file moves the inode, and `cp -p` or `touch -r` over it still
moves ctime (no call sets ctime), so a changed file is hashed again.

The one race: a file written again within the same timestamp tick in which it was hashed
keeps its mtime. So a digest is remembered only for a file whose mtime was at least one tick
older than the moment hashing began (two seconds on file systems that keep whole seconds),
and a file still being written is hashed again at the next build, not trusted.

The stat decides only whether to read a file again; the digest still decides every layer,
and `omi-build verify` re-hashes every blob of a layout whatever the cache says.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from omi_build import atomic

_TICK_NS = 100_000_000  # Linux file systems stamp from a clock that ticks every 1-10 ms
_COARSE_TICK_NS = 2_000_000_000  # FAT keeps 2 s; whole-second stamps suggest a coarse one
# The mtime omi-build gives the files it writes into its own folders: any later write sets
# mtime to the present, so a file it wrote can be trusted from the moment it was written.
WRITTEN_MTIME_NS = 0

Signature = tuple[int, int, int, int, int]


def signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _settled(st: os.stat_result, started_ns: int) -> bool:
    """Whether a write after `started_ns` would have given the file another mtime."""
    tick = _COARSE_TICK_NS if st.st_mtime_ns % 1_000_000_000 == 0 else _TICK_NS
    return st.st_mtime_ns == WRITTEN_MTIME_NS or st.st_mtime_ns < started_ns - tick


class StatCache:
    """One JSON file of key -> (stat signature, digest); `path` None keeps them in memory only.

    Thread-safe. Each change is written at once (write-then-rename), so a killed build loses
    nothing it had hashed; two builds writing one file keep the last one's view, and what the
    other remembered is hashed again next time, never trusted wrongly."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Signature, str]] | None = None

    def _loaded(self) -> dict[str, tuple[Signature, str]]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, tuple[Signature, str]]:
        if self._path is None:
            return {}
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: every file is hashed again
        entries: dict[str, tuple[Signature, str]] = {}
        if not isinstance(raw, dict):
            return entries
        for key, value in raw.items():
            if (
                isinstance(value, list)
                and len(value) == 6  # five stat fields and the digest
                and all(isinstance(item, int) for item in value[:5])
                and isinstance(value[5], str)
            ):
                entries[key] = ((value[0], value[1], value[2], value[3], value[4]), value[5])
        return entries

    def known(self, key: str, st: os.stat_result) -> str | None:
        """The digest remembered for `key` if the file's stat is still the one hashed."""
        with self._lock:
            found = self._loaded().get(key)
        if found is None or found[0] != signature(st):
            return None
        return found[1]

    def remember(self, key: str, st: os.stat_result, digest: str, *, started_ns: int) -> None:
        """Keep `digest` for the file whose stat was `st` when hashing began at `started_ns`."""
        if not _settled(st, started_ns):
            return
        with self._lock:
            entries = self._loaded()
            if entries.get(key) == (signature(st), digest):
                return
            entries[key] = (signature(st), digest)
            self._save(entries)

    def forget(self, key: str) -> None:
        with self._lock:
            if self._loaded().pop(key, None) is not None:
                self._save(self._loaded())

    def _save(self, entries: dict[str, tuple[Signature, str]]) -> None:
        if self._path is None:
            return
        text = json.dumps({key: [*sig, digest] for key, (sig, digest) in sorted(entries.items())})
        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self._path, text)

    def trust_written(self, key: str, path: Path, digest: str) -> None:
        """Remember a file omi-build has just written with a known digest: its mtime is set to
        WRITTEN_MTIME_NS, which any later write changes (not remembered if that fails)."""
        try:
            os.utime(path, ns=(path.stat().st_atime_ns, WRITTEN_MTIME_NS))
            self.remember(key, path.stat(), digest, started_ns=time.time_ns())
        except OSError:
            return

    def digest(self, key: str, stream: IO[bytes], compute: Callable[[IO[bytes]], str]) -> str:
        """The digest of the open file `stream`: remembered, or `compute`d and remembered if
        the file did not change while it was read."""
        before = os.fstat(stream.fileno())
        if (found := self.known(key, before)) is not None:
            return found
        started = time.time_ns()
        digest = compute(stream)
        if signature(os.fstat(stream.fileno())) == signature(before):
            self.remember(key, before, digest, started_ns=started)
        return digest
