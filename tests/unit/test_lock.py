"""Debian sources and resolution, and omi.lock's format and staleness."""

from __future__ import annotations

import dataclasses
import io
import shutil
from pathlib import Path

import pytest

from omi_build import lock
from omi_build.errors import LockError
from omi_build.lock import _apt
from omi_build.manifest import load
from omi_build.store import Store
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


def _host_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, updates: bool = True) -> None:
    suites = ["bookworm", "bookworm-updates"] if updates else ["bookworm"]
    lines = [f"deb [signed-by=/k.gpg] http://mirror.test/debian {suite} main contrib\n" for suite in suites]
    (tmp_path / "sources.list").write_text(
        "".join(lines) + "# deb http://ignored.test/debian bookworm main\n"
    )
    (tmp_path / "d").mkdir(exist_ok=True)
    (tmp_path / "d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://other.test/x\nSuites: trixie\nComponents: main\n"
    )
    monkeypatch.setattr(_apt, "APT_SOURCES", tmp_path / "sources.list")
    monkeypatch.setattr(_apt, "APT_SOURCES_DIR", tmp_path / "d")
    for variable in ("OMI_DEBIAN_MIRROR", "OMI_DEBIAN_SECURITY_MIRROR", "OMI_DEBIAN_SNAPSHOT_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("OMI_DEBIAN_SECURITY_SNAPSHOT_URL", raising=False)


def _suites(archives: list[_apt.Archive]) -> list[tuple[str, str]]:
    return [(a.uri, a.suite) for a in archives]


def test_host_sources_in_both_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host_sources(tmp_path, monkeypatch)
    archives = _apt.archives_for("bookworm", None, None)
    assert [(a.uri, a.suite, str(a.keyring)) for a in archives] == [
        ("http://mirror.test/debian", "bookworm", "/k.gpg"),
        ("http://mirror.test/debian", "bookworm-updates", "/k.gpg"),
        (
            "http://mirror.test/debian-security",
            "bookworm-security",
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        ),
    ]


def test_host_sources_without_security_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host_sources(tmp_path, monkeypatch, updates=False)
    (tmp_path / "d" / "debian.sources").unlink()
    with pytest.raises(LockError, match="no bookworm-security"):
        _apt.archives_for("bookworm", None, None)
    monkeypatch.setenv("OMI_DEBIAN_SECURITY_MIRROR", "http://sec.test/debian-security")
    assert _suites(_apt.archives_for("bookworm", None, None)) == [
        ("http://mirror.test/debian", "bookworm"),
        ("http://sec.test/debian-security", "bookworm-security"),
    ]


def test_a_mirror_always_brings_all_three_suites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host_sources(tmp_path, monkeypatch)
    expected = [
        ("https://m.test/debian", "bookworm"),
        ("https://m.test/debian", "bookworm-updates"),
        ("https://m.test/debian-security", "bookworm-security"),
    ]
    assert _suites(_apt.archives_for("bookworm", "https://m.test/debian/", None)) == expected
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", "https://m.test/debian")
    assert _suites(_apt.archives_for("bookworm", None, None)) == expected
    # its own base, from the manifest or the environment
    monkeypatch.setenv("OMI_DEBIAN_SECURITY_MIRROR", "https://s.test/sec/")
    assert _suites(_apt.archives_for("bookworm", None, None))[2] == (
        "https://s.test/sec",
        "bookworm-security",
    )
    assert _suites(_apt.archives_for("bookworm", None, None, "https://x.test/ds"))[2] == (
        "https://x.test/ds",
        "bookworm-security",
    )
    monkeypatch.delenv("OMI_DEBIAN_SECURITY_MIRROR")
    # a mirror not laid out like Debian's: the host's security source, else an error
    assert _suites(_apt.archives_for("bookworm", "https://m.test/mirror", None))[2] == (
        "http://mirror.test/debian-security",
        "bookworm-security",
    )
    (tmp_path / "d" / "debian.sources").unlink()
    with pytest.raises(LockError, match="no mirror of Debian's security archive") as exc:
        _apt.archives_for("bookworm", "https://m.test/mirror", None)
    assert "OMI_DEBIAN_SECURITY_MIRROR" in (exc.value.hint or "")


def test_mirror_precedence_and_missing_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_apt, "APT_SOURCES", tmp_path / "none")
    monkeypatch.setattr(_apt, "APT_SOURCES_DIR", tmp_path / "none.d")
    monkeypatch.delenv("OMI_DEBIAN_SECURITY_MIRROR", raising=False)
    monkeypatch.delenv("OMI_DEBIAN_SECURITY_SNAPSHOT_URL", raising=False)
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", "http://env.test/debian/")
    assert _apt.archives_for("bookworm", None, None)[0].uri == "http://env.test/debian"
    assert _apt.archives_for("bookworm", "file:///srv/debian", None)[0].uri == "file:///srv/debian"
    monkeypatch.delenv("OMI_DEBIAN_MIRROR")
    with pytest.raises(LockError, match="no Debian mirror"):
        _apt.archives_for("bookworm", None, None)
    with pytest.raises(LockError, match="snapshot"):
        _apt.archives_for("bookworm", None, "20250520T000000Z")
    monkeypatch.setenv("OMI_DEBIAN_SNAPSHOT_URL", "http://snap.test/archive/debian/{snapshot}")
    assert _suites(_apt.archives_for("bookworm", None, "20250520T000000Z")) == [
        ("http://snap.test/archive/debian/20250520T000000Z", "bookworm"),
        ("http://snap.test/archive/debian/20250520T000000Z", "bookworm-updates"),
        ("http://snap.test/archive/debian-security/20250520T000000Z", "bookworm-security"),
    ]
    monkeypatch.setenv("OMI_DEBIAN_SNAPSHOT_URL", "http://snap.test/d/{snapshot}")
    with pytest.raises(LockError, match="no snapshot of Debian's security archive"):
        _apt.archives_for("bookworm", None, "20250520T000000Z")
    monkeypatch.setenv("OMI_DEBIAN_SECURITY_SNAPSHOT_URL", "http://snap.test/s/{snapshot}")
    assert (
        _apt.archives_for("bookworm", None, "20250520T000000Z")[2].uri
        == "http://snap.test/s/20250520T000000Z"
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


def _fake_archives(monkeypatch: pytest.MonkeyPatch, newer: dict[str, str] | None = None) -> list[str]:
    """Indexes served from the committed lock by suite (no network); `newer` bumps a package's
    version in bookworm-security. Returns the URIs asked for."""
    committed = lock.read(load(EXAMPLES / "iris-sklearn"))
    asked: list[str] = []

    def index(archive: _apt.Archive, arch: str, *_: object) -> dict[str, _apt.DebPackage]:
        asked.append(f"{archive.uri} {archive.suite}")
        packages = {}
        for package in committed.platform("cpu", f"linux/{arch}").debian:
            if package.suite == archive.suite:
                packages[package.name] = package
        for name, version in (newer or {}).items():
            if archive.suite == "bookworm-security":
                old = committed.platform("cpu", f"linux/{arch}").debian
                base = next(p for p in old if p.name == name)
                packages[name] = dataclasses.replace(base, version=version, suite="bookworm-security")
        return packages

    monkeypatch.setattr(_apt, "index", index)
    monkeypatch.setattr(
        lock._wheels,
        "resolve",
        lambda _wanted, *, arch, **_: list(committed.platform("cpu", f"linux/{arch}").wheels),
    )
    return asked


def test_a_mirror_configured_lock_pins_what_the_host_sources_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = _fake_archives(monkeypatch)
    _host_sources(tmp_path, monkeypatch)
    manifest = load(EXAMPLES / "iris-sklearn")
    from_host = lock.resolve(manifest, Store(tmp_path / "cache"))
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", "http://elsewhere.test/debian")
    from_mirror = lock.resolve(manifest, Store(tmp_path / "cache"))
    assert from_mirror.to_json() == from_host.to_json()
    suites = {p.suite for p in from_mirror.platform("cpu", "linux/amd64").debian}
    assert "bookworm-security" in suites
    assert "http://elsewhere.test/debian-security bookworm-security" in asked
    # and building the lock finds every suite's files on that mirror
    debian = from_host.platform("cpu", "linux/amd64").debian
    suites_of = {p.sha256: p.suite for p in debian}
    sources = lock.deb_sources(manifest, debian)
    security = [s.url for s in sources if suites_of[s.sha256] == "bookworm-security"]
    assert security
    assert all(url.startswith("http://elsewhere.test/debian-security/pool/") for url in security)


def test_lock_check_security_exits_3_when_an_update_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iris: Path
) -> None:
    from omi_build.cli import main  # noqa: PLC0415

    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    _host_sources(tmp_path, monkeypatch)
    _fake_archives(monkeypatch)
    out, err = io.StringIO(), io.StringIO()
    assert main(["lock", "--check", "--security", str(iris)], out=out, err=err) == 0
    assert "up to date" in out.getvalue()
    _fake_archives(monkeypatch, newer={"libssl3": "3.0.99-1~deb12u1"})
    out, err = io.StringIO(), io.StringIO()
    assert main(["lock", "--check", "--security", str(iris)], out=out, err=err) == 3
    assert "libssl3 (amd64): locked 3.0." in err.getvalue()
    assert "bookworm-security has 3.0.99-1~deb12u1" in err.getvalue()
    assert "run 'omi-build lock'" in err.getvalue()
    assert main(["lock", "--security", str(iris)], out=out, err=err) == 2


def test_an_unreachable_index_gets_a_network_hint_not_a_pin_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess  # noqa: PLC0415

    seen: dict[str, str] = {}

    def fake_run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
        env = options["env"]
        assert isinstance(env, dict)
        seen.update(env)
        stderr = (
            "error: Failed to fetch: `https://index.test/simple/numpy/`\n  Caused by: operation timed out"
        )
        return subprocess.CompletedProcess(command, 2, "", stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("OMI_NETWORK_TIMEOUT", "7")
    monkeypatch.delenv("UV_HTTP_TIMEOUT", raising=False)
    with pytest.raises(LockError) as exc:
        lock._wheels.resolve(["numpy"], arch="amd64", suite="bookworm", python_version="3.11")
    assert "could not be reached" in (exc.value.hint or "")
    assert "pin a version" not in (exc.value.hint or "")
    assert seen["UV_HTTP_TIMEOUT"] == "7"
    assert seen["UV_HTTP_RETRIES"] == "2"
