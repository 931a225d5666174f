"""The files of a model package, found and read without ever leaving the package.

A model directory is checked into git, and git stores symbolic links: `secret -> /etc/shadow`
or `env.bin -> /proc/self/environ` is one commit away, and a build that followed it would copy
the build machine's files (in CI, its tokens) into an image. So every path the manifest names
is opened component by component from the package root with O_NOFOLLOW, and only regular
files are read: a link swapped in between `validate` and `build` cannot escape either.

Links are refused unless the manifest sets `model.allow_links: true`; then a link is followed
only if it resolves to a regular file inside the package.

>>> from pathlib import Path
>>> select(Path("examples/iris-sklearn"), ["model.*"]).files
['model.npz', 'model.py']
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Protocol

from omi_build.digests import sha256_stream
from omi_build.errors import PackageFileError

_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
)
LINK_ADVICE = "copy the file into the package instead (or set model.allow_links: true for links inside it)"


def kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"


def problem_with(root: Path, relative: str, *, allow_links: bool = False) -> str | None:
    """Why `relative` (a path inside `root`) cannot go into an image, or None if it can."""
    found = _culprit(root, relative, allow_links=allow_links)
    return None if found is None else found[1]


def _culprit(root: Path, relative: str, *, allow_links: bool) -> tuple[str, str] | None:
    """The first part of `relative` that cannot be read into an image, and why."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return (
            shown,
            "has a name that is not UTF-8 (image layers and the serving config need UTF-8); rename it",
        )
    parts = PurePosixPath(relative).parts
    current = root
    for index, part in enumerate(parts):
        current /= part
        where = "/".join(parts[: index + 1])
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            return where, "does not exist"
        except OSError as exc:
            return where, f"cannot be read: {exc.strerror}"
        if stat.S_ISLNK(mode):
            if not allow_links:
                return where, f"is a symbolic link to '{current.readlink()}'; {LINK_ADVICE}"
            problem = _link_problem(root, relative)
            return None if problem is None else (relative, problem)
        if index == len(parts) - 1 and not stat.S_ISREG(mode):
            return where, f"is {kind_of(mode)}; only regular files go into an image"
    return None


def _link_problem(root: Path, relative: str) -> str | None:
    real_root = root.resolve()
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(real_root):
        return f"is a symbolic link that leads out of the package (to {resolved}); {LINK_ADVICE}"
    inner = resolved.relative_to(real_root).as_posix()
    problem = problem_with(real_root, inner, allow_links=False)
    return f"leads to '{inner}', which {problem}" if problem else None


@dataclass(slots=True)
class Selection:
    """What a list of globs selects: files by relative path, and the paths refused, with why."""

    files: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def select(root: Path, patterns: Iterable[str], *, allow_links: bool = False) -> Selection:
    """The regular files inside `root` that `patterns` (pathlib globs) select."""
    selection = Selection()
    seen: set[str] = set()
    for pattern in patterns:
        for match in sorted(root.glob(pattern)):
            relative = match.relative_to(root).as_posix()
            try:
                mode = match.lstat().st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                continue
            culprit = _culprit(root, relative, allow_links=allow_links)
            if culprit is not None:
                selection.refused.setdefault(*culprit)  # a linked directory once, not each file
                continue
            if relative not in seen:
                seen.add(relative)
                selection.files.append(relative)
    selection.files.sort()
    return selection


@contextmanager
def open_inside(root: Path, relative: str, *, allow_links: bool = False) -> Iterator[IO[bytes]]:
    """Open a regular file of the package for reading, following no link on the way.

    Each directory is opened with O_NOFOLLOW relative to the last, so a link put anywhere on
    the path after validation still cannot lead out. O_NONBLOCK keeps a FIFO from blocking.
    """
    if allow_links:
        real_root = root.resolve()
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(real_root):
            msg = f"{relative} is a symbolic link that leads out of the package (to {resolved})"
            raise PackageFileError(msg, hint=LINK_ADVICE)
        root, relative = real_root, resolved.relative_to(real_root).as_posix()
    parts = PurePosixPath(relative).parts
    if not parts or any(part in {"..", "/"} for part in parts):
        msg = f"{relative} is not a path inside the package"
        raise PackageFileError(msg)
    directory_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    opened: list[int] = []
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        opened.append(fd)
        for part in parts[:-1]:
            fd = os.open(part, directory_flags, dir_fd=fd)
            opened.append(fd)
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        for each in opened:
            os.close(each)
        if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
            msg = f"{relative} is or passes through a symbolic link"
            raise PackageFileError(msg, hint=LINK_ADVICE) from exc
        msg = f"cannot open {relative} in {root}: {exc.strerror}"
        raise PackageFileError(msg) from exc
    for each in opened:
        os.close(each)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        msg = f"{relative} is {kind_of(mode)}; only regular files go into an image"
        raise PackageFileError(msg)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as stream:
        yield stream


def read_inside(root: Path, relative: str, *, allow_links: bool = False) -> bytes:
    with open_inside(root, relative, allow_links=allow_links) as stream:
        return stream.read()


class Known(Protocol):
    """Digests remembered by stat (store.StatCache): a file unchanged since is not read again."""

    def digest(self, key: str, stream: IO[bytes], compute: Callable[[IO[bytes]], str]) -> str: ...


def sha256_inside(root: Path, relative: str, *, allow_links: bool = False, known: Known | None = None) -> str:
    """The file's sha256 ("sha256:<hex>"), read in 1 MiB chunks: bounded memory at any size.

    With `known`, a file whose stat (taken on the file opened here, so never through a link)
    is the one it had when last hashed is not read at all."""
    with open_inside(root, relative, allow_links=allow_links) as stream:
        if known is None:
            return "sha256:" + sha256_stream(stream)
        return "sha256:" + known.digest(relative, stream, sha256_stream)
