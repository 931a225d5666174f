"""omi-build cache: what the cache holds, and cleaning it without pulling it from under a build."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from omi_build import cache
from omi_build.cli import main
from omi_build.errors import CacheError
from omi_build.layers import Blob
from omi_build.store import Store


def _filled(root: Path) -> tuple[Store, Path, Path]:
    """A cache with a download, a layer blob and its record, an unpacked archive, an old folder."""
    store = Store(root)
    download = store.put_bytes(b"a .deb")
    layer = store.put_bytes(b"a layer, gzip")
    (root / "layers").mkdir()
    blob = Blob(diff_id="sha256:" + "0" * 64, digest="sha256:" + layer.name, size=13, media_type="gzip")
    record = {"blob": dataclasses.asdict(blob), "inventory": []}
    (root / "layers" / "key.json").write_text(json.dumps(record))
    (root / "unpacked").mkdir()
    (root / "unpacked" / "key").write_bytes(b"x" * 1000)
    (root / "pyc" / "ab").mkdir(parents=True)
    (root / "pyc" / "ab" / "cd").write_bytes(b"old bytecode")
    return store, download, layer


def test_usage_tells_downloads_from_what_was_built(tmp_path: Path) -> None:
    store, _, _ = _filled(tmp_path)
    rows = {(row.folder, row.what): (row.files, row.size) for row in cache.usage(store)}
    assert rows[("blobs/sha256", "downloaded .debs and wheels")] == (1, len(b"a .deb"))
    assert rows[("blobs/sha256", "built layers")] == (1, len(b"a layer, gzip"))
    assert rows[("unpacked", "each download unpacked, with its bytecode")] == (1, 1000)
    assert rows[("pyc", "left by another omi-build version")] == (1, len(b"old bytecode"))


def test_clean_keeping_downloads_removes_only_what_was_built(tmp_path: Path) -> None:
    store, download, layer = _filled(tmp_path)
    built = sum(row.size for row in cache.usage(store) if row.what != "downloaded .debs and wheels")
    assert cache.clean(store, keep_downloads=True) == built
    assert download.exists()
    assert not layer.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blobs", "locks"]
    assert Store(tmp_path).verified(download.name, what="the .deb") == download


def test_clean_empties_everything_but_the_locks(tmp_path: Path) -> None:
    store, _, _ = _filled(tmp_path)
    assert cache.clean(store, keep_downloads=False) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["locks"]


def test_clean_refuses_while_a_build_uses_the_cache(tmp_path: Path) -> None:
    store, download, _ = _filled(tmp_path)
    with Store(tmp_path).in_use(), pytest.raises(CacheError, match="a build is using the cache"):
        cache.clean(store, keep_downloads=False)
    assert download.exists()
    with Store(tmp_path).in_use(), Store(tmp_path).in_use():
        pass  # builds share it


def test_cli_shows_and_cleans_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _filled(tmp_path)
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path))
    out = io.StringIO()
    assert main(["--format", "json", "cache"], out=out, err=io.StringIO()) == 0
    shown = json.loads(out.getvalue())
    assert shown["path"] == str(tmp_path)
    assert shown["total_bytes"] == sum(folder["bytes"] for folder in shown["folders"])
    out = io.StringIO()
    assert main(["cache", "clean", "--keep-downloads"], out=out, err=io.StringIO()) == 0
    assert "MB freed (downloads kept)" in out.getvalue()
