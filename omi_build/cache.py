"""The cache folder as a whole: what it holds, and cleaning it (`omi-build cache`).

Builds hold a shared lock on the cache while they run; cleaning takes it exclusively and
refuses while a build runs, so no build loses a file it is about to read.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from omi_build import atomic, layers
from omi_build.store import FOLDERS, Store


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    folder: str
    what: str
    files: int
    size: int


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _measure(paths: list[Path]) -> tuple[int, int]:
    files = size = 0
    for path in paths:
        for item in [path] if path.is_file() else path.rglob("*"):
            if item.is_file() and not item.is_symlink():
                files += 1
                size += item.stat().st_size
    return files, size


def _top(name: str) -> str:
    return name.split("/", 1)[0]


def usage(store: Store) -> list[Usage]:
    """What the cache holds, folder by folder; the store's blobs split into downloads and layers."""
    built = layers.built_blobs(store)
    blobs = (
        [b for b in store.blobs.iterdir() if not atomic.is_temporary(b.name)] if store.blobs.is_dir() else []
    )
    rows = []
    for what, chosen in (
        ("downloaded .debs and wheels", [b for b in blobs if b.name not in built]),
        ("built layers", [b for b in blobs if b.name in built]),
    ):
        files, size = _measure(chosen)
        rows.append(Usage(folder="blobs/sha256", what=what, files=files, size=size))
    registered = {_top(name) for name in FOLDERS}
    for folder in FOLDERS.values():
        if folder.derived:
            path = store.folder(folder.name)
            files, size = _measure([path]) if path.is_dir() else (0, 0)
            rows.append(Usage(folder=folder.name, what=folder.what, files=files, size=size))
    for path in _children(store.root):
        if path.is_dir() and path.name not in registered:
            files, size = _measure([path])
            rows.append(
                Usage(folder=path.name, what="left by another omi-build version", files=files, size=size)
            )
    return rows


def clean(store: Store, *, keep_downloads: bool) -> int:
    """Remove the cache's contents (or all but the downloads); the bytes freed.

    Raises CacheError while a build is using the cache.
    """
    with store.exclusive():
        before = sum(row.size for row in usage(store))
        if keep_downloads:
            for digest in layers.built_blobs(store):
                store.path_for(digest).unlink(missing_ok=True)
            for leftover in store.blobs.iterdir() if store.blobs.is_dir() else []:
                if atomic.is_temporary(leftover.name):
                    leftover.unlink(missing_ok=True)  # temporary files of killed builds
        kept = {_top(f.name) for f in FOLDERS.values() if not f.derived} if keep_downloads else {"locks"}
        for path in [item for item in _children(store.root) if item.name not in kept]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return before - sum(row.size for row in usage(store))
