"""Reading .deb files in Python: no dpkg, and no maintainer script ever runs.

A .deb is an `ar` archive of debian-binary, control.tar.* and data.tar.*. Files keep their
modes; paths move under /usr (Debian 12 systems are merged-/usr); documentation other than
copyright files is left out.
"""

from __future__ import annotations

import io
import lzma
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omi_build.errors import BuildError

from ._tar import Entry

# Debian 12 is merged-/usr: /bin, /lib... are symlinks into /usr.
MERGED_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_DROPPED_PREFIXES = (
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/locale/",
    "usr/share/bug/",
    "usr/share/doc-base/",
    "usr/share/menu/",
    "usr/share/gdb/",
    "etc/init.d/",
    "etc/cron.daily/",
    "etc/logrotate.d/",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Deb:
    control: str
    md5sums: str
    entries: tuple[Entry, ...]


def _ar_members(data: bytes, what: str) -> dict[str, bytes]:
    if not data.startswith(b"!<arch>\n"):
        msg = f"{what} is not a Debian package (no ar header)"
        raise BuildError(msg)
    members = {}
    position = 8
    while position + 60 <= len(data):
        header = data[position : position + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        position += 60
        members[name] = data[position : position + size]
        position += size + (size % 2)
    return members


def _decompress(name: str, payload: bytes) -> bytes:
    if name.endswith(".xz"):
        return lzma.decompress(payload)
    if name.endswith(".gz"):
        return zlib.decompress(payload, 16 + zlib.MAX_WBITS)
    if name.endswith(".zst"):
        import zstandard  # noqa: PLC0415 - rare in Debian archives

        return zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    if name.endswith(".tar"):
        return payload
    msg = f"unknown compression of {name}"
    raise BuildError(msg)


def _tar_member(members: dict[str, bytes], prefix: str, what: str) -> bytes:
    for name, payload in members.items():
        if name.startswith(prefix):
            return _decompress(name, payload)
    msg = f"{what} has no {prefix}*"
    raise BuildError(msg)


def relocate(path: str) -> str:
    """A path as it lies on a merged-/usr system."""
    top, _, rest = path.partition("/")
    return f"usr/{top}/{rest}".rstrip("/") if top in MERGED_DIRS else path


def _kept(path: str) -> bool:
    if "/gconv/" in path:
        return False  # iconv's charset modules (7 MB); Python's codecs do not use them
    if path.startswith("usr/share/doc/"):
        return path.endswith("/copyright") or path.count("/") == 3
    return not path.startswith(_DROPPED_PREFIXES)


def _entries(data_tar: bytes) -> Iterator[Entry]:
    with tarfile.open(fileobj=io.BytesIO(data_tar)) as tar:
        members = tar.getmembers()
        by_name = {m.name: m for m in members}
        for member in members:
            path = relocate(member.name.removeprefix("./").strip("/"))
            if not path or not _kept(path):
                continue
            if member.isdir():
                yield Entry(path=path, kind="dir", mode=member.mode)
            elif member.issym():
                yield Entry(path=path, kind="symlink", target=member.linkname)
            elif member.islnk():
                source = by_name.get(member.linkname) or by_name.get(
                    "./" + member.linkname.removeprefix("./")
                )
                if source is not None and source.isfile():
                    extracted = tar.extractfile(source)
                    yield Entry(path=path, mode=source.mode, data=extracted.read() if extracted else b"")
            elif member.isfile():
                extracted = tar.extractfile(member)
                yield Entry(path=path, mode=member.mode, data=extracted.read() if extracted else b"")


def read(path: Path, what: str) -> Deb:
    members = _ar_members(path.read_bytes(), what)
    control_tar = _tar_member(members, "control.tar", what)
    control = md5sums = ""
    with tarfile.open(fileobj=io.BytesIO(control_tar)) as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("./")
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is None:
                continue
            if name == "control":
                control = extracted.read().decode("utf-8", errors="replace")
            elif name == "md5sums":
                md5sums = extracted.read().decode("utf-8", errors="replace")
    entries = tuple(_entries(_tar_member(members, "data.tar", what)))
    return Deb(control=control, md5sums=md5sums, entries=entries)
