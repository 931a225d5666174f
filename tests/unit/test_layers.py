"""Deterministic layers, .deb reading, wheel installation, the distroless-style base."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from omi_build.errors import BuildError
from omi_build.layers import Unpacked, debian_entries, wheel_entries
from omi_build.layers import _unpack as unpack
from omi_build.layers._deb import read, relocate
from omi_build.layers._tar import Entry, _with_parents, write
from omi_build.lock import DebPackage
from omi_build.store import Store

from .builders import deb, wheel

NO_PYC = "3.99"  # no interpreter of this version compiles here, so no .pyc (and no processes)


def _members(store: Store, digest: str) -> dict[str, tarfile.TarInfo]:
    raw = gzip.decompress(store.path_for(digest).read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_layer_bytes_do_not_depend_on_entry_order(tmp_path: Path) -> None:
    store = Store(tmp_path)
    entries = [
        Entry(path="usr/bin/tool", mode=0o4755, data=b"x" * 100),
        Entry(path="etc/conf", data=b"a=1\n"),
        Entry(path="bin", kind="symlink", target="usr/bin"),
        Entry(path="tmp", kind="dir", mode=0o1777),
        Entry(path="var/tmp", kind="dir", mode=0o1777),
        Entry(path="var/local", kind="dir", mode=0o2775),
    ]
    first = write(entries, store, compression="gzip", epoch=1_700_000_000)
    second = write(list(reversed(entries)), store, compression="gzip", epoch=1_700_000_000)
    assert first == second
    blob = store.path_for(first.digest).read_bytes()
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no time, no name
    assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == first.diff_id
    members = _members(store, first.digest)
    assert list(members) == sorted(members)
    assert {"usr", "usr/bin", "etc"} <= set(members)  # parents are listed
    assert members["usr/bin/tool"].mode == 0o755  # setuid dropped
    assert members["tmp"].mode == 0o1777
    assert members["var/tmp"].mode == members["var/local"].mode == 0o755  # only /tmp is writable
    assert {m.mtime for m in members.values()} == {1_700_000_000}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "", "")}


def _tarfile_bytes(entries: list[Entry], epoch: int) -> bytes:
    """The same members written by Python's tarfile, the reference the hand encoder matches."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in _with_parents(entries):
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.uid, info.gid = epoch, entry.uid, entry.gid
            if entry.kind == "dir":
                # Folders: no setuid/setgid, no group or world write; only /tmp is 1777.
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if entry.path == "tmp" else entry.mode & 0o755
            elif entry.kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
            else:
                info.size, info.mode = len(entry.data), 0o755 if entry.mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return out.getvalue()


def test_tar_encoding_equals_pythons_tarfile(tmp_path: Path) -> None:
    long_dir = "usr/lib/" + "d" * 120
    entries = [
        Entry(path="usr", kind="dir", mode=0o755),
        Entry(path="usr/lib", kind="dir", mode=0o755),
        Entry(path=long_dir, kind="dir", mode=0o755),
        Entry(path=f"{long_dir}/{'f' * 90}.py", data=b"x = 1\n" * 300),
        Entry(path="usr/lib/caf\u00e9", data=b"\xff" * 513, mode=0o4755, uid=65532, gid=65532),
        Entry(path="usr/lib/empty", data=b""),
        Entry(path="usr/lib/large", data=bytes(range(256)) * 5000),
        Entry(path="usr/lib/link", kind="symlink", target="../" + "t" * 150),
        Entry(path="usr/lib/x" * 11, kind="dir", mode=0o1777),
    ]
    store = Store(tmp_path)
    blob = write(entries, store, compression="gzip", epoch=1_700_000_000)
    ours = gzip.decompress(store.path_for(blob.digest).read_bytes())
    assert ours == _tarfile_bytes(entries, 1_700_000_000)


def test_zstd_layers_are_deterministic_too(tmp_path: Path) -> None:
    store = Store(tmp_path)
    entries = [Entry(path="a", data=b"hello" * 1000)]
    first = write(entries, store, compression="zstd", epoch=0)
    assert first == write(entries, store, compression="zstd", epoch=0)
    assert first.media_type.endswith("tar+zstd")


def test_epoch_changes_the_layer(tmp_path: Path) -> None:
    store = Store(tmp_path)
    entries = [Entry(path="a", data=b"1")]
    assert write(entries, store, compression="gzip", epoch=0) != write(
        entries, store, compression="gzip", epoch=1
    )


def test_merged_usr_relocation() -> None:
    assert relocate("lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert relocate("bin") == "usr/bin"
    assert relocate("etc/passwd") == "etc/passwd"
    assert relocate("library/x") == "library/x"


def test_deb_reading_keeps_copyright_and_drops_docs(tmp_path: Path) -> None:
    path = deb(
        tmp_path,
        "libdemo",
        {
            "./lib/x86_64-linux-gnu/libdemo.so.1": b"\x7fELF",
            "./usr/share/doc/libdemo/copyright": b"MIT",
            "./usr/share/doc/libdemo/changelog.Debian.gz": b"...",
            "./usr/share/man/man1/demo.1.gz": b"...",
            "./usr/lib/x86_64-linux-gnu/gconv/IBM1390.so": b"...",
        },
        links={"./usr/lib/x86_64-linux-gnu/libdemo.so": "libdemo.so.1"},
    )
    package = read(path, "libdemo")
    paths = {e.path for e in package.entries if e.kind != "dir"}
    assert paths == {
        "usr/lib/x86_64-linux-gnu/libdemo.so.1",
        "usr/lib/x86_64-linux-gnu/libdemo.so",
        "usr/share/doc/libdemo/copyright",
    }
    assert "Package: libdemo" in package.control
    assert "lib/x86_64-linux-gnu/libdemo.so.1" in package.md5sums


def _pkg(name: str) -> DebPackage:
    return DebPackage(
        name=name,
        version="1.0",
        architecture="amd64",
        filename="",
        sha256="0" * 64,
        size=1,
        suite="s",
    )


def test_debian_base_synthesises_what_maintainer_scripts_would(tmp_path: Path) -> None:
    debs = [
        (
            _pkg("ca-certificates"),
            deb(
                tmp_path,
                "ca-certificates",
                {
                    "./usr/share/ca-certificates/mozilla/B.crt": b"B\n",
                    "./usr/share/ca-certificates/mozilla/A.crt": b"A",
                },
            ),
        ),
        (
            _pkg("libdemo"),
            deb(
                tmp_path,
                "libdemo",
                {
                    "./lib/x86_64-linux-gnu/libdemo.so.1": b"\x7fELF",
                    "./usr/sbin/update-thing": b"#!/bin/sh",
                },
            ),
        ),
    ]
    entries = {e.path: e for e in debian_entries(_unpacked(debs), uid=65532)}
    assert entries["etc/ssl/certs/ca-certificates.crt"].data == b"A\nB\n"
    assert "nonroot:x:65532:65532" in entries["etc/passwd"].data.decode()
    assert entries["home/nonroot"].uid == 65532
    assert entries["tmp"].mode == 0o1777
    assert entries["lib"].target == "usr/lib"
    assert "Package: libdemo" in entries["var/lib/dpkg/status.d/libdemo"].data.decode()
    assert "var/lib/dpkg/status.d/libdemo.md5sums" in entries
    assert "usr/sbin/update-thing" not in entries


def _unpacked(debs: list[tuple[DebPackage, Path]]) -> list[tuple[DebPackage, Unpacked]]:
    return [(p, unpack.extract_deb(path, p.name)) for p, path in debs]


def test_a_shell_in_the_base_is_refused(tmp_path: Path) -> None:
    debs = [(_pkg("bash"), deb(tmp_path, "bash", {"./bin/bash": b"\x7fELF"}))]
    with pytest.raises(BuildError, match="shell"):
        debian_entries(_unpacked(debs), uid=65532)


def test_wheels_install_into_dist_packages_without_scripts(tmp_path: Path) -> None:
    path = wheel(
        tmp_path,
        "demo",
        {
            "demo/__init__.py": b"x = 1\n",
            "demo-1.0.dist-info/METADATA": b"Name: demo\n",
            "demo-1.0.data/purelib/extra.py": b"y = 2\n",
            "demo-1.0.data/scripts/demo": b"#!python\n",
        },
    )
    paths = {e.path for e in wheel_entries(path, "demo")}
    assert paths == {
        "usr/lib/python3/dist-packages/demo/__init__.py",
        "usr/lib/python3/dist-packages/demo-1.0.dist-info/METADATA",
        "usr/lib/python3/dist-packages/extra.py",
    }


def test_wheel_with_unsafe_path_is_refused(tmp_path: Path) -> None:
    path = wheel(tmp_path, "evil", {"../../etc/passwd": b"root::0:0"})
    with pytest.raises(BuildError, match="unsafe path"):
        wheel_entries(path, "evil")
