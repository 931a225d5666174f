"""The image's own Python, run on the build host to compile the image's bytecode.

Bytecode must come from the image's Python version, which the host often lacks (omi-build may
run on 3.12 while the image is Debian 12's 3.11). Where the host's architecture is one the
target builds, the locked interpreter packages (python3.X-minimal, libpython3.X-minimal and
the libraries the binary links) are written once into the cache and run there through the
image's own dynamic loader, so neither the host's Python nor its C library is involved: the
bytecode then depends only on locked packages. Elsewhere the host's interpreter compiles when
it is the image's minor version (its bytes may differ: 3.11.7 and the image's 3.11.2 compile
one numpy module differently); with neither, the image gets no bytecode.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from omi_build import atomic
from omi_build.lock import DebPackage
from omi_build.platforms import host_arch

from ._pyc import Compiler, host_compiler
from ._tar import Entry

# Debian architecture -> (multiarch directory, dynamic loader) in a merged-/usr tree
_LOADERS = {
    "amd64": ("x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "arm64": ("aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}


def packages_for(python_version: str) -> tuple[str, ...]:
    """What running the interpreter needs: the binary, its core library, what it links."""
    return (
        f"python{python_version}-minimal",
        f"libpython{python_version}-minimal",
        "libc6",
        "zlib1g",
        "libexpat1",
    )


def image_packages(python_version: str, debs_by_arch: dict[str, Iterable[DebPackage]]) -> list[DebPackage]:
    """The locked interpreter packages of the host's architecture; [] if it is not built."""
    arch = host_arch()
    if arch not in debs_by_arch or arch not in _LOADERS:
        return []
    wanted = packages_for(python_version)
    found = {p.name: p for p in debs_by_arch[arch] if p.name in wanted}
    return [found[name] for name in wanted] if len(found) == len(wanted) else []


def identity(python_version: str, packages: list[DebPackage]) -> str | None:
    """What the bytecode depends on, known before anything is downloaded: a cache key."""
    if packages:
        pinned = ", ".join(f"{p.name}={p.sha256}" for p in packages)
        return f"image python{python_version} {packages[0].architecture}: {pinned}"
    fallback = host_compiler(python_version)
    return fallback.identity if fallback else None


def describe(python_version: str, packages: list[DebPackage]) -> str:
    """The image's interpreter in a few words, for messages."""
    binary = packages[0]
    return f"the image's python{python_version} ({binary.name} {binary.version}, {binary.architecture})"


def _needed(path: str, python_version: str, triplet: str) -> bool:
    """The binary, the standard library and the shared libraries; not docs, data or locales."""
    if path == f"usr/bin/python{python_version}" or path.startswith(f"usr/lib/python{python_version}/"):
        return True
    directory, _, name = path.rpartition("/")
    return directory in {f"usr/lib/{triplet}", "usr/lib64", "usr/lib"} and ".so" in name


_FILES = ".files.json"  # path -> sha256 of every file written, checked before each use


def _intact(root: Path) -> bool:
    try:
        files = json.loads((root / _FILES).read_text(encoding="utf-8"))
        return all(
            hashlib.sha256((root / path).read_bytes()).hexdigest() == digest for path, digest in files.items()
        )
    except (OSError, ValueError, AttributeError):
        return False


def _write(root: Path, contents: Iterable[Iterable[Entry]], python_version: str, triplet: str) -> None:
    files = {}
    for entries in contents:
        for entry in entries:
            if entry.kind == "dir" or not _needed(entry.path, python_version, triplet):
                continue
            target = root / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.kind == "symlink":
                if not target.is_symlink():
                    target.symlink_to(entry.target)
            else:
                target.write_bytes(entry.data)
                target.chmod(0o755 if entry.mode & 0o111 else 0o644)
                files[entry.path] = hashlib.sha256(entry.data).hexdigest()
    (root / _FILES).write_text(json.dumps(files, sort_keys=True), encoding="utf-8")


def materialize(  # noqa: PLR0917 - what to run, where its files come from, where they go
    python_version: str,
    arch: str,
    contents: Callable[[], Iterable[Iterable[Entry]]],
    folder: Path,
    key: str,
    name: str,
) -> Compiler:
    """The compiler that runs the packages' interpreter, written once under `folder`.

    `contents` gives the packages' files; it is called only when they are not written yet.
    The tree is written to a temporary directory and renamed into place, so a build that
    stops halfway leaves nothing a later build would use; every file is checked against its
    recorded digest before use, and a damaged tree is written again.
    """
    triplet, loader = _LOADERS[arch]
    root = folder / hashlib.sha256(key.encode()).hexdigest()[:32]
    if root.is_dir() and not _intact(root):
        shutil.rmtree(root, ignore_errors=True)
    if not root.is_dir():
        with atomic.new_folder(root) as scratch:
            _write(scratch, contents(), python_version, triplet)
    return Compiler(
        argv=(
            str(root / "usr" / "lib" / triplet / loader),
            "--library-path",
            str(root / "usr" / "lib" / triplet),
            str(root / "usr" / "bin" / f"python{python_version}"),
            "-S",  # no site: nothing but the standard library's core is imported
            "-s",
            "-B",
        ),
        # Only where its standard library is: nothing of the host's environment reaches it.
        env={"PYTHONHOME": str(root / "usr")},
        python_version=python_version,
        identity=name,
    )


__all__ = ["describe", "identity", "image_packages", "materialize", "packages_for"]
