"""Small, real inputs made in memory: .deb files, wheels, Packages indexes."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import lzma
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from omi_build.download import Downloads
from omi_build.layers import LayerBuilder
from omi_build.layers._tar import Compression, Source
from omi_build.manifest import files
from omi_build.progress import Silent
from omi_build.store import Store


def _tar(members: list[tuple[str, bytes | None, int, str]]) -> bytes:
    """(name, data or None for a dir, mode, symlink target or '') -> tar bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode, link in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


def deb(tmp: Path, name: str, files: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    """A .deb whose data.tar.xz holds `files` (paths like './usr/bin/x') and symlinks."""
    control = f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\n".encode()
    md5sums = "".join(  # dpkg's md5sums format
        f"{hashlib.md5(d, usedforsecurity=False).hexdigest()}  {p.removeprefix('./')}\n"
        for p, d in files.items()
    )
    control_tar = _tar([("./control", control, 0o644, ""), ("./md5sums", md5sums.encode(), 0o644, "")])
    members: list[tuple[str, bytes | None, int, str]] = [("./", None, 0o755, "")]
    for name_in_tar, data in sorted(files.items()):
        mode = 0o755 if "/bin/" in name_in_tar else 0o644
        members.append((name_in_tar, data, mode, ""))
    for name_in_tar, target in sorted((links or {}).items()):
        members.append((name_in_tar, b"", 0o777, target))
    data_tar = lzma.compress(_tar(members))
    deb_path = tmp / f"{name}_1.0_amd64.deb"
    deb_path.write_bytes(
        _ar(
            [
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", _gzip(control_tar)),
                ("data.tar.xz", data_tar),
            ]
        )
    )
    return deb_path


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def wheel(tmp: Path, name: str, files: dict[str, bytes]) -> Path:
    path = tmp / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
    return path


@contextlib.contextmanager
def layer_builder(cache: Path, compression: Compression | Literal["auto"] = "gzip") -> Iterator[LayerBuilder]:
    """A layer builder over the store in `cache`, epoch 0, with nothing to download."""
    store = Store(cache)
    with (
        Downloads(store) as downloads,
        LayerBuilder(
            store, downloads, compression=compression, epoch=0, python_version="3.11", progress=Silent()
        ) as builder,
    ):
        yield builder


def file_source(directory: Path, name: str, *, size: int | None = None, digest: str | None = None) -> Source:
    """A layer entry's source that reads `name` in `directory` as a build does (size: the file's,
    unless given; digest None: found while it is read)."""
    return Source(
        name=name,
        size=(directory / name).stat().st_size if size is None else size,
        digest=digest,
        open=functools.partial(files.open_inside, directory, name),
    )
