"""Archives unpacked once into the download cache; layers compressed in independent pieces."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
import zlib
from pathlib import Path

import pytest

from omi_build.download import Downloads
from omi_build.errors import BuildError
from omi_build.layers import _tar
from omi_build.layers import _unpack as unpack
from omi_build.layers._tar import Entry, write
from omi_build.store import Store

from .builders import deb, file_source, wheel

NO_PYC = "3.99"  # no interpreter of this version compiles here, so no .pyc (and no processes)


def _stored_archive(store: Store, path: Path, kind: unpack.ArchiveKind) -> unpack.Archive:
    data = path.read_bytes()
    store.put_bytes(data)
    return unpack.Archive(kind=kind, sha256=hashlib.sha256(data).hexdigest(), what=path.name, size=len(data))


def _demo_deb(tmp_path: Path) -> Path:
    return deb(
        tmp_path,
        "libdemo",
        {
            "./lib/x86_64-linux-gnu/libdemo.so.1": b"\x7fELF" * 100,
            "./usr/share/doc/libdemo/copyright": b"MIT",
        },
        links={"./usr/lib/x86_64-linux-gnu/libdemo.so": "libdemo.so.1"},
    )


def test_stored_form_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    unpacked = unpack.extract_deb(_demo_deb(tmp_path), "libdemo")
    stored = b"".join(unpack.encode(unpacked))
    assert unpack.decode(stored) == unpacked
    flipped = bytearray(stored)
    flipped[-3] ^= 0x20
    for damaged in (stored[:-1], bytes(flipped), b"something else"):
        with pytest.raises(ValueError, match="intact"):
            unpack.decode(damaged)


def _unpacked_by_a_new_build(store: Store, archive: unpack.Archive) -> unpack.Unpacked:
    with Downloads(store) as downloads, unpack.Unpacker(store, downloads, python_version=NO_PYC) as unpacker:
        return unpacker.get(archive)


def test_an_archive_is_unpacked_once_and_read_back_from_the_cache(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    archive = _stored_archive(store, _demo_deb(tmp_path), "deb")
    unpacked = _unpacked_by_a_new_build(store, archive)
    store.path_for(archive.sha256).unlink()  # the next build never opens the archive again
    assert _unpacked_by_a_new_build(store, archive) == unpacked


def test_a_damaged_unpacked_entry_is_unpacked_again(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    archive = _stored_archive(store, _demo_deb(tmp_path), "deb")
    unpacked = _unpacked_by_a_new_build(store, archive)
    [stored] = (store.root / "unpacked").iterdir()
    stored.write_bytes(stored.read_bytes()[:-10])  # a crash or a disk error cut it short
    assert _unpacked_by_a_new_build(store, archive) == unpacked
    assert unpack.decode(stored.read_bytes()) == unpacked  # rewritten whole


def test_unpacking_failure_reaches_whoever_waits(tmp_path: Path) -> None:
    store = Store(tmp_path / "cache")
    bogus = tmp_path / "bogus.deb"
    bogus.write_bytes(b"not a deb")
    archive = _stored_archive(store, bogus, "deb")
    with pytest.raises(BuildError, match="not a Debian package"):
        _unpacked_by_a_new_build(store, archive)
    assert not (store.root / "unpacked").exists()


def test_a_damaged_wheel_member_is_named(tmp_path: Path) -> None:
    path = wheel(tmp_path, "demo", {"demo/__init__.py": b"x = 1\n" * 1000})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("demo/__init__.py")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BuildError, match=r"demo-1\.0.* is damaged: demo/__init__\.py"):
        unpack.wheel_entries(path, path.name)


def test_wheel_members_compressed_or_stored_read_back(tmp_path: Path) -> None:
    path = tmp_path / "mixed-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mixed/a.py", b"a = 1\n" * 500, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("mixed/b.bin", bytes(range(256)), compress_type=zipfile.ZIP_STORED)
    entries = {e.path: e.data for e in unpack.wheel_entries(path, path.name)}
    assert entries == {
        "usr/lib/python3/dist-packages/mixed/a.py": b"a = 1\n" * 500,
        "usr/lib/python3/dist-packages/mixed/b.bin": bytes(range(256)),
    }


def _gzip_members(blob: bytes) -> int:
    count, rest = 0, blob
    while rest:
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        reader.decompress(rest)
        rest = reader.unused_data
        count += 1
    return count


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_large_layers_compress_in_pieces_that_read_back_as_one_stream(
    tmp_path: Path, compression: _tar.Compression
) -> None:
    store = Store(tmp_path)
    noise = hashlib.shake_256(b"seed").digest(3 * _tar.PIECE_BYTES)  # incompressible
    entries = [Entry(path="big", data=noise), Entry(path="small", data=b"x" * 1000)]
    blob = write(entries, store, compression=compression, epoch=0)
    raw = store.path_for(blob.digest).read_bytes()
    if compression == "gzip":
        tar = gzip.decompress(raw)
        assert _gzip_members(raw) == 4  # a little over 3 pieces of tar
    else:
        import zstandard  # noqa: PLC0415

        tar = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == blob.diff_id
    assert len(tar) == blob.uncompressed_size


def _tar_of(raw: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(raw)
    import zstandard  # noqa: PLC0415

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True).read()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pieces_that_do_not_compress_are_stored_and_read_back(
    tmp_path: Path, compression: _tar.Compression
) -> None:
    """Random weights: stored (gzip stored blocks, zstd raw blocks), within 1% of the tar,
    decoded by the standard readers; text beside them is still compressed."""
    store = Store(tmp_path)
    noise = hashlib.shake_256(b"weights").digest(2 * _tar.PIECE_BYTES + 12345)
    text = b"a line of a config file that compresses well\n" * 200_000  # 9 MB
    entries = [Entry(path="w.bin", data=noise), Entry(path="x.txt", data=text)]
    blob = write(entries, store, compression=compression, epoch=0)
    raw = store.path_for(blob.digest).read_bytes()
    tar = _tar_of(raw, compression)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == blob.diff_id
    assert len(noise) < blob.size < len(noise) * 1.01 + len(text) / 10  # noise stored, text compressed
    alone = write([Entry(path="w.bin", data=noise)], store, compression=compression, epoch=0)
    assert alone.size <= 1.01 * alone.uncompressed_size


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar"])
def test_stored_pieces_are_the_same_bytes_however_the_tar_was_written(
    tmp_path: Path, compression: _tar.Compression
) -> None:
    """Streamed in 1 MiB reads or held whole, the blocks fall in the same places."""
    data = hashlib.shake_256(b"streamed").digest(_tar.PIECE_BYTES + 777_777)
    (tmp_path / "w.bin").write_bytes(data)
    source = file_source(tmp_path, "w.bin")
    store = Store(tmp_path / "cache")
    streamed = write([Entry(path="m/w.bin", source=source)], store, compression=compression, epoch=0)
    held = write([Entry(path="m/w.bin", data=data)], store, compression=compression, epoch=0)
    assert streamed == held
    assert source.found["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()  # found on the way


def test_a_file_that_changes_while_its_layer_is_written_fails_and_leaves_no_blob(tmp_path: Path) -> None:
    data = hashlib.shake_256(b"grows").digest(3 << 20)
    (tmp_path / "w.bin").write_bytes(data)
    source = file_source(tmp_path, "w.bin", size=len(data) - 1000)  # the size the build saw; it grew since
    store = Store(tmp_path / "cache")
    with pytest.raises(BuildError, match="changed while the image was being built"):
        write([Entry(path="m/w.bin", source=source)], store, compression="gzip", epoch=0)
    assert not list(store.blobs.iterdir())
