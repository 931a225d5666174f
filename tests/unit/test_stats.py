"""The stat cache: unchanged files are not read again, and every kind of change is."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import IO

import pytest

from omi_build.digests import sha256_stream
from omi_build.errors import FetchError
from omi_build.layers import model_file_digests
from omi_build.store import StatCache, Store

LONG_AGO_NS = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000 + 123_456_789


class Counting:
    """sha256_stream, counting the files it reads."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, stream: IO[bytes]) -> str:
        self.reads += 1
        return sha256_stream(stream)


def _settled(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(LONG_AGO_NS, LONG_AGO_NS))


def _digest(cache: StatCache, path: Path, compute: Counting) -> str:
    with path.open("rb") as stream:
        return cache.digest(path.name, stream, compute)


def test_an_unchanged_file_is_read_once_across_processes(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    _settled(weights, b"w" * 10_000)
    compute = Counting()
    first = _digest(StatCache(tmp_path / "stats.json"), weights, compute)
    again = _digest(StatCache(tmp_path / "stats.json"), weights, compute)  # a new build reads the file
    assert first == again == hashlib.sha256(b"w" * 10_000).hexdigest()
    assert compute.reads == 1


@pytest.mark.parametrize(
    "change",
    [
        "rewritten, same size, mtime put back",  # cp -p / touch -r: only ctime tells
        "replaced by rename",
        "appended",
    ],
)
def test_a_changed_file_is_hashed_again(tmp_path: Path, change: str) -> None:
    weights = tmp_path / "weights.bin"
    _settled(weights, b"a" * 4096)
    cache, compute = StatCache(tmp_path / "stats.json"), Counting()
    _digest(cache, weights, compute)
    time.sleep(0.01)  # ctime moves on from the first write's
    if change.startswith("rewritten"):
        _settled(weights, b"b" * 4096)
    elif change.startswith("replaced"):
        other = tmp_path / "other.bin"
        _settled(other, b"b" * 4096)
        other.replace(weights)
    else:
        with weights.open("ab") as handle:
            handle.write(b"b")
    assert _digest(cache, weights, compute) != hashlib.sha256(b"a" * 4096).hexdigest()
    assert compute.reads == 2


def test_a_file_written_just_before_hashing_is_not_trusted(tmp_path: Path) -> None:
    """Written within the timestamp tick of the hashing: a second write in that tick would
    keep the mtime, so the digest is not remembered and the next build reads it again."""
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"fresh")
    cache, compute = StatCache(tmp_path / "stats.json"), Counting()
    _digest(cache, weights, compute)
    _digest(cache, weights, compute)
    assert compute.reads == 2


def test_a_damaged_stat_file_costs_only_a_read(tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    _settled(weights, b"w")
    for damage in (b"{not json", b"[1, 2]", b'{"weights.bin": [1, 2, "x"]}', b"\xff\xfe"):
        (tmp_path / "stats.json").write_bytes(damage)
        assert (
            _digest(StatCache(tmp_path / "stats.json"), weights, Counting())
            == hashlib.sha256(b"w").hexdigest()
        )


def test_model_file_digests_read_no_unchanged_file_twice(tmp_path: Path) -> None:
    package = tmp_path / "model"
    package.mkdir()
    _settled(package / "model.py", b"class M: ...\n")
    _settled(package / "weights.bin", os.urandom(3 << 20))
    cache = StatCache(tmp_path / "stats.json")
    first = model_file_digests(package, ["*"], known=cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("omi_build.manifest.files.sha256_stream", _refuse)
        assert model_file_digests(package, ["*"], known=cache) == first
    assert first == model_file_digests(package, ["*"])  # the same digests without the cache


def _refuse(_stream: IO[bytes]) -> str:
    msg = "an unchanged file was read again"
    raise AssertionError(msg)


def test_a_link_swapped_in_is_refused_whatever_the_cache_says(tmp_path: Path) -> None:
    package = tmp_path / "model"
    package.mkdir()
    _settled(package / "weights.bin", b"w")
    cache = StatCache(tmp_path / "stats.json")
    model_file_digests(package, ["*"], known=cache)
    (package / "weights.bin").unlink()
    (package / "weights.bin").symlink_to("/etc/hostname")
    with pytest.raises(Exception, match="symbolic link"):
        model_file_digests(package, ["*"], known=cache)


def test_a_store_blob_damaged_in_place_is_found_by_a_later_build(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    path = store.put_bytes(b"layer bytes")
    digest = path.name
    Store(tmp_path / "cache").verified(digest, what="the layer")  # trusted by its stat
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    path.write_bytes(b"LAYER BYTES")  # same size; mtime put back as a careful tamperer would
    os.utime(path, ns=(mtime, mtime))
    with pytest.raises(FetchError, match="corrupt"):
        Store(tmp_path / "cache").verified(digest, what="the layer")
    assert not path.exists()
