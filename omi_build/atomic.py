"""Write-then-rename, in one style: a file appears whole under its name or not at all.

Every temporary name is `.<name>.<pid>.<thread>.<n>.tmp` beside its target: hidden, unique per
writer, and recognisable (`is_temporary`), so the cache's sweep removes only what a killed
build left, whatever folder a stage writes into.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "lock.json"
>>> write_bytes(target, b"{}")
>>> target.read_bytes()
b'{}'
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

_COUNTER = itertools.count()
_SUFFIX = ".tmp"


def temporary_beside(path: Path) -> Path:
    """A fresh temporary name in `path`'s folder, for a file or folder that becomes `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_COUNTER)}{_SUFFIX}")


def is_temporary(name: str) -> bool:
    """Whether a name in a folder is one that `temporary_beside` made."""
    return name.startswith(".") and name.endswith(_SUFFIX)


@contextlib.contextmanager
def replacing(path: Path, *, durable: bool = False, mode: int = 0o666) -> Iterator[IO[bytes]]:
    """A file to write that takes `path`'s place when the block ends without an error (synced to
    disk first when `durable`); after an error it is removed and `path` is as it was. `mode`
    (less the umask) applies from creation, so a secret is never readable by others."""
    temporary = temporary_beside(path)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(descriptor, "wb") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes, *, durable: bool = False, mode: int = 0o666) -> None:
    with replacing(path, durable=durable, mode=mode) as out:
        out.write(data)


def write_text(path: Path, text: str, *, durable: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), durable=durable)


@contextlib.contextmanager
def new_folder(path: Path) -> Iterator[Path]:
    """A folder to fill that is renamed to `path` when the block ends without an error. If
    another writer put `path` there first, theirs is kept (same inputs, same contents)."""
    scratch = temporary_beside(path)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        try:
            scratch.rename(path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
