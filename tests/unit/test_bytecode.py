"""Which interpreter compiles an image's bytecode, and what it produces."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from omi_build.layers import _interpreter, _pyc
from omi_build.layers._tar import Entry
from omi_build.lock import DebPackage


def _deb(name: str, arch: str = "amd64") -> DebPackage:
    return DebPackage(
        name=name,
        version="1",
        architecture=arch,
        filename="",
        sha256=name.ljust(64, "0")[:64],
        size=1,
        suite="s",
    )


def _debs(arch: str) -> list[DebPackage]:
    return [_deb(name, arch) for name in (*_interpreter.packages_for("3.11"), "libssl3")]


@pytest.mark.parametrize(
    ("machine", "expected"), [("x86_64", "amd64"), ("aarch64", "arm64"), ("riscv64", None)]
)
def test_the_host_architecture_picks_the_interpreter_packages(
    monkeypatch: pytest.MonkeyPatch, machine: str, expected: str | None
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    chosen = _interpreter.image_packages("3.11", {"amd64": _debs("amd64"), "arm64": _debs("arm64")})
    assert {p.architecture for p in chosen} == ({expected} if expected else set())
    assert [p.name for p in chosen] == (list(_interpreter.packages_for("3.11")) if expected else [])


def test_no_image_interpreter_when_its_platform_or_a_package_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert _interpreter.image_packages("3.11", {"arm64": _debs("arm64")}) == []
    incomplete = [p for p in _debs("amd64") if p.name != "zlib1g"]
    assert _interpreter.image_packages("3.11", {"amd64": incomplete}) == []


def test_the_identity_names_the_pinned_interpreter_or_the_host() -> None:
    packages = _debs("amd64")[:5]
    assert f"python3.11-minimal={packages[0].sha256}" in (_interpreter.identity("3.11", packages) or "")
    assert _interpreter.describe("3.11", packages) == "the image's python3.11 (python3.11-minimal 1, amd64)"
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert _interpreter.identity(host, []) == f"host {sys.version}"
    assert _interpreter.identity("3.99", []) is None  # no bytecode at all


@pytest.mark.integration  # starts interpreter processes
def test_the_host_compiles_deterministic_unchecked_bytecode() -> None:
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    compiler = _pyc.host_compiler(host)
    assert compiler is not None
    sources = [("pkg/a.py", b"x = {'b', 'a'}\n"), ("pkg/broken.py", b"def (:\n"), ("b.py", b"y = 2\n")]
    first = _pyc.compile_all(sources, compiler)
    assert first == _pyc.compile_all(list(reversed(sources)), compiler)
    tag = compiler.cache_tag
    assert [path for path, _ in first] == [f"__pycache__/b.{tag}.pyc", f"pkg/__pycache__/a.{tag}.pyc"]
    assert all(data[4:8] == (1).to_bytes(4, "little") for _, data in first)  # hash-based, unchecked


@pytest.mark.integration  # starts interpreter processes
def test_bytecode_is_shared_between_calls() -> None:
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    compiler = _pyc.host_compiler(host)
    assert compiler is not None
    shared: _pyc.Shared = {}
    first = _pyc.compile_all([("m.py", b"z = 3\n")], compiler, shared)
    broken = _pyc.Compiler(argv=("/nonexistent/python",), env=None, python_version=host, identity="none")
    assert _pyc.compile_all([("m.py", b"z = 3\n")], broken, shared) == first  # nothing left to compile


def _python_files() -> list[list[Entry]]:
    return [
        [
            Entry(path="usr/bin/python3.11", mode=0o755, data=b"\x7fELF binary"),
            Entry(path="usr/lib/python3.11/os.py", data=b"import sys\n"),
            Entry(path="usr/lib/x86_64-linux-gnu/libc.so.6", mode=0o755, data=b"\x7fELF libc"),
            Entry(path="usr/lib64/ld-linux-x86-64.so.2", kind="symlink", target="../lib/x86_64-linux-gnu/ld"),
            Entry(path="usr/share/doc/libc6/copyright", data=b"LGPL"),
            Entry(path="usr/lib/locale/C.utf8/LC_CTYPE", data=b"locale"),
        ]
    ]


def test_the_images_python_is_written_once_checked_and_rewritten_when_damaged(tmp_path: Path) -> None:
    calls = []

    def contents() -> list[list[Entry]]:
        calls.append(1)
        return _python_files()

    compiler = _interpreter.materialize("3.11", "amd64", contents, tmp_path, "key", "python3.11 test")
    home = Path(compiler.env["PYTHONHOME"]) if compiler.env else tmp_path
    assert compiler.argv[0] == str(home / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    assert (home / "bin/python3.11").stat().st_mode & 0o111
    assert not (home / "share/doc").exists()  # not needed to run
    assert not (home / "lib/locale").exists()
    _interpreter.materialize("3.11", "amd64", contents, tmp_path, "key", "python3.11 test")
    assert len(calls) == 1  # reused
    (home / "lib/python3.11/os.py").write_bytes(b"damaged")
    _interpreter.materialize("3.11", "amd64", contents, tmp_path, "key", "python3.11 test")
    assert len(calls) == 2
    assert (home / "lib/python3.11/os.py").read_bytes() == b"import sys\n"
    assert [p.name for p in tmp_path.iterdir()] == [home.parent.name]  # no temporary left
