"""Debian sources and resolution, and omi.lock's format and staleness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from omi_build import lock
from omi_build.errors import LockError
from omi_build.lock import _apt
from omi_build.manifest import load
from tests.conftest import EXAMPLES

PACKAGES = """\
Package: python3.11-minimal
Version: 3.11.2-6
Architecture: amd64
Depends: libpython3.11-minimal (= 3.11.2-6), libexpat1 (>= 2.1~beta3), zlib1g (>= 1:1.2.0)
Pre-Depends: libc6 (>= 2.36)
Filename: pool/main/p/python3.11/python3.11-minimal_3.11.2-6_amd64.deb
Size: 100
SHA256: aa

Package: libpython3.11-minimal
Version: 3.11.2-6
Architecture: amd64
Depends: libc6 (>= 2.14), libssl3 (>= 3.0.0)
Filename: pool/main/p/python3.11/libpython3.11-minimal_3.11.2-6_amd64.deb
Size: 100
SHA256: bb

Package: libc6
Version: 2.36-9
Architecture: amd64
Depends: libgcc-s1
Filename: pool/main/g/glibc/libc6_2.36-9_amd64.deb
Size: 100
SHA256: cc

Package: libgcc-s1
Version: 12.2.0-14
Architecture: amd64
Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.35)
Filename: g
Size: 1
SHA256: dd

Package: gcc-12-base
Version: 12.2.0-14
Architecture: amd64
Filename: g2
Size: 1
SHA256: ee

Package: libexpat1
Version: 2.5.0-1
Architecture: amd64
Depends: libc6 (>= 2.25)
Filename: e
Size: 1
SHA256: ff

Package: zlib1g
Version: 1:1.2.13
Architecture: amd64
Depends: libc6 (>= 2.14)
Filename: z
Size: 1
SHA256: 11

Package: libssl3-provider
Version: 3.0.11
Architecture: amd64
Provides: libssl3 (= 3.0.11)
Depends: debconf (>= 0.5) | debconf-2.0
Filename: s
Size: 1
SHA256: 22
"""


def test_resolution_follows_depends_skips_exclusions_and_uses_provides() -> None:
    packages = _apt._parse_packages(PACKAGES, "bookworm")
    resolved = [p.name for p in _apt.resolve(["python3.11-minimal"], packages)]
    assert resolved == [
        "gcc-12-base",
        "libc6",
        "libexpat1",
        "libgcc-s1",
        "libpython3.11-minimal",
        "libssl3-provider",
        "python3.11-minimal",
        "zlib1g",
    ]


def test_unknown_package_names_who_wanted_it() -> None:
    packages = _apt._parse_packages(PACKAGES, "bookworm")
    with pytest.raises(LockError, match="'libfoo' \\(wanted by the base\\) is not in the archive"):
        _apt.resolve(["libc6", "libfoo"], packages)


def test_newest_version_across_archives_wins() -> None:
    main = _apt._parse_packages(PACKAGES, "bookworm")
    security = _apt._parse_packages(PACKAGES.replace("2.36-9", "2.36-9+deb12u4"), "bookworm-security")
    merged = _apt.merge([main, security])
    assert (merged["libc6"].version, merged["libc6"].suite) == (
        "2.36-9+deb12u4",
        "bookworm-security",
    )


def test_release_hashes() -> None:
    release = (
        "Origin: Debian\nSHA256:\n 0123 8697 main/binary-amd64/Packages.xz\n"
        " abcd 10 main/Contents-all\nMD5Sum:\n ff 1 x\n"
    )
    assert _apt._release_hashes(release) == {
        "main/binary-amd64/Packages.xz": ("0123", 8697),
        "main/Contents-all": ("abcd", 10),
    }


def test_host_sources_in_both_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://mirror.test/debian bookworm main contrib\n"
        "# deb http://ignored.test/debian bookworm main\n"
    )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://other.test/x\nSuites: trixie\nComponents: main\n"
    )
    monkeypatch.setattr(_apt, "APT_SOURCES", tmp_path / "sources.list")
    monkeypatch.setattr(_apt, "APT_SOURCES_DIR", tmp_path / "d")
    monkeypatch.delenv("OMI_DEBIAN_MIRROR", raising=False)
    archives = _apt.archives_for("bookworm", None, None)
    assert [(a.uri, a.suite, str(a.keyring)) for a in archives] == [
        ("http://mirror.test/debian", "bookworm", "/k.gpg"),
        (
            "http://mirror.test/debian-security",
            "bookworm-security",
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
    ]


def test_mirror_precedence_and_missing_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_apt, "APT_SOURCES", tmp_path / "none")
    monkeypatch.setattr(_apt, "APT_SOURCES_DIR", tmp_path / "none.d")
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", "http://env.test/debian/")
    assert _apt.archives_for("bookworm", None, None)[0].uri == "http://env.test/debian"
    assert _apt.archives_for("bookworm", "file:///srv/debian", None)[0].uri == "file:///srv/debian"
    monkeypatch.delenv("OMI_DEBIAN_MIRROR")
    with pytest.raises(LockError, match="no Debian mirror"):
        _apt.archives_for("bookworm", None, None)
    with pytest.raises(LockError, match="snapshot"):
        _apt.archives_for("bookworm", None, "20250520T000000Z")
    monkeypatch.setenv("OMI_DEBIAN_SNAPSHOT_URL", "http://snap.test/debian/{snapshot}")
    assert (
        _apt.archives_for("bookworm", None, "20250520T000000Z")[0].uri
        == "http://snap.test/debian/20250520T000000Z"
    )


@pytest.fixture
def iris(tmp_path: Path) -> Path:
    copy = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris-sklearn", copy)
    return copy


def test_committed_lock_of_the_example_is_current() -> None:
    manifest = load(EXAMPLES / "iris-sklearn")
    current = lock.check(manifest)
    assert set(current.targets["cpu"]) == {"linux/amd64", "linux/arm64"}
    amd64 = current.platform("cpu", "linux/amd64")
    assert {w.name for w in amd64.wheels} >= {"numpy", "grpcio", "protobuf"}
    assert {p.name for p in amd64.debian} >= {"libc6", "python3.11-minimal", "ca-certificates"}
    assert not {p.name for p in amd64.debian} & _apt.EXCLUDED


def test_lock_round_trips(iris: Path) -> None:
    manifest = load(iris)
    original = lock.read(manifest)
    assert lock.read(manifest).to_json() == original.to_json() == (iris / "omi.lock").read_text()


def test_changed_requirements_make_the_lock_stale(iris: Path) -> None:
    text = (iris / "omi.yaml").read_text().replace("numpy==2.4.6", "numpy==2.4.5")
    (iris / "omi.yaml").write_text(text)
    with pytest.raises(LockError, match="stale") as exc:
        lock.check(load(iris))
    assert "omi-build lock" in (exc.value.hint or "")


def test_missing_or_broken_lock(iris: Path) -> None:
    (iris / "omi.lock").unlink()
    with pytest.raises(LockError, match="does not exist"):
        lock.check(load(iris))
    (iris / "omi.lock").write_text('{"lockVersion": 1, "inputs": "x"}')
    with pytest.raises(LockError, match="not a valid lock file"):
        lock.read(load(iris))
