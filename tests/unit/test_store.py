"""The content-addressed store: digests checked, writes atomic, corruption found."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from omi_build import atomic
from omi_build.errors import FetchError
from omi_build.store import FOLDERS, Store


def _leftovers(store: Store) -> list[Path]:
    return [p for p in store.blobs.iterdir() if atomic.is_temporary(p.name)]


def test_fetch_checks_the_digest_and_caches(tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    store = Store(tmp_path / "cache")
    path = store.fetch(source.as_uri(), digest, what="file.bin")
    assert path.read_bytes() == b"payload"
    source.unlink()  # a second fetch never goes to the source
    assert store.fetch(source.as_uri(), digest, what="file.bin") == path


def test_wrong_digest_leaves_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "file.bin"
    source.write_bytes(b"tampered")
    store = Store(tmp_path / "cache")
    with pytest.raises(FetchError, match="does not match") as exc:
        store.fetch(source.as_uri(), "0" * 64, what="numpy-2.0.whl")
    assert "numpy-2.0.whl" in str(exc.value)
    assert exc.value.hint is not None
    assert not store.has("0" * 64)
    assert _leftovers(store) == []


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    with pytest.raises(FetchError, match=r"libc6: cannot download"):
        store.fetch((tmp_path / "absent.deb").as_uri(), "0" * 64, what="libc6")


def test_corrupt_entry_is_detected_and_removed(tmp_path: Path) -> None:
    path = Store(tmp_path).put_bytes(b"good")
    path.write_bytes(b"evil")
    with pytest.raises(FetchError, match="corrupt") as exc:
        Store(tmp_path).verified(path.name, what="libssl3")  # the next build's store
    assert "run the command again" in (exc.value.hint or "")
    assert not path.exists()


def test_interrupted_write_leaves_no_entry(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def interrupted() -> None:
        with store.writer() as out:
            out.write(b"half")
            raise RuntimeError

    with pytest.raises(RuntimeError):
        interrupted()
    assert list(store.blobs.iterdir()) == []


def test_sweep_removes_only_old_leftovers_of_killed_builds(tmp_path: Path) -> None:
    store = Store(tmp_path)
    kept = store.put_bytes(b"entry")
    old_file = atomic.temporary_beside(store.blobs / "abandoned")
    old_file.write_bytes(b"half")
    fresh_file = atomic.temporary_beside(store.blobs / "being-written")
    fresh_file.write_bytes(b"half")
    old_dir = atomic.temporary_beside(store.folder("interpreters") / "abandoned")
    (old_dir / "usr").mkdir(parents=True)
    # every registered folder is swept: a new stage's folder needs no change here
    others = [atomic.temporary_beside(store.folder(name) / "x") for name in FOLDERS]
    dotfile = store.folder("layers") / ".not-ours"  # not a temporary name: left alone
    for path in (*others, dotfile):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    long_ago = time.time() - 3 * 24 * 3600
    for path in (old_file, old_dir, *others, dotfile):
        os.utime(path, (long_ago, long_ago))
    store.sweep()
    assert kept.exists()
    assert fresh_file.exists()  # another build may be writing it
    assert dotfile.exists()
    assert not old_file.exists()
    assert not old_dir.exists()
    assert not any(path.exists() for path in others)


def test_sweep_passes_over_a_stray_file_where_a_cache_folder_belongs(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.folder("layers").write_bytes(b"not a folder")
    store.sweep()  # no NotADirectoryError on every build
    assert store.folder("layers").read_bytes() == b"not a folder"
