"""Model files never leave the package: links, special files and swapped-in links are refused."""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import pytest

from omi_build.cli import main
from omi_build.errors import PackageFileError
from omi_build.layers import model_file_digests
from omi_build.manifest import files
from tests.conftest import EXAMPLES

IRIS = EXAMPLES / "iris-sklearn"
CANARY = "OMI_CANARY_TOKEN_4c1f"


def _package(tmp_path: Path, files_line: str, extra: str = "") -> Path:
    package = tmp_path / "pkg"
    package.mkdir()
    shutil.copy(IRIS / "model.py", package / "model.py")
    shutil.copy(IRIS / "model.npz", package / "model.npz")
    text = (IRIS / "omi.yaml").read_text(encoding="utf-8")
    text = text.replace("  files: [model.py, model.npz]\n", f"  files: {files_line}\n{extra}")
    (package / "omi.yaml").write_text(text, encoding="utf-8")
    return package


def _validate(package: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["validate", str(package)], out=out, err=err)
    return code, err.getvalue()


def _build(package: Path, tmp_path: Path) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    output = tmp_path / "out"
    code = main(["build", str(package), "--output", str(output)], out=out, err=err)
    assert not output.exists()  # refused before anything was written
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("files_line", "link", "target"),
    [
        ("[model.py, model.npz, secret]", "secret", "/etc/shadow"),  # named
        ('[model.py, model.npz, "*.key"]', "host.key", "/etc/shadow"),  # matched by a glob
        ('[model.py, model.npz, "hostetc/*"]', "hostetc", "/etc"),  # a directory link
        ('[model.py, model.npz, "**/*.bin"]', "env.bin", "/proc/self/environ"),  # the build's environment
    ],
)
def test_links_out_of_the_package_are_refused_with_a_located_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files_line: str, link: str, target: str
) -> None:
    monkeypatch.setenv(CANARY, "leaked")
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    package = _package(tmp_path, files_line)
    (package / link).symlink_to(target)
    code, err = _validate(package)
    assert code == 2
    assert f"model.files[2]: '{link}" in err
    assert "symbolic link" in err
    assert "copy the file into the package" in err
    assert ":16:" in err.splitlines()[0]  # the line of model.files
    assert "Traceback" not in err
    code, err = _build(package, tmp_path)
    assert code == 2
    assert CANARY not in err
    assert not (tmp_path / "cache" / "blobs").exists()


def test_the_build_checks_again_after_validation(tmp_path: Path) -> None:
    """A link that appears after validate (or that the manifest cache would hide) fails the build."""
    package = _package(tmp_path, '[model.py, "*.npz"]')
    assert _validate(package)[0] == 0
    (package / "leak.npz").symlink_to("/etc/passwd")
    with pytest.raises(PackageFileError, match=r"leak\.npz is a symbolic link"):
        model_file_digests(package, ["model.py", "*.npz"])


def test_a_link_swapped_in_after_the_check_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.bin").write_bytes(b"weights")
    assert files.select(tmp_path, ["weights/*.bin"]).files == ["weights/w.bin"]
    (tmp_path / "weights" / "w.bin").unlink()
    (tmp_path / "weights" / "w.bin").symlink_to("/etc/passwd")
    with pytest.raises(PackageFileError, match="symbolic link"):
        files.read_inside(tmp_path, "weights/w.bin")
    # a directory on the way swapped for a link
    shutil.rmtree(tmp_path / "weights")
    (tmp_path / "weights").symlink_to("/etc")
    with pytest.raises(PackageFileError, match="symbolic link"):
        files.read_inside(tmp_path, "weights/passwd")


def test_special_files_are_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, '[model.py, model.npz, "pipe*"]')
    os.mkfifo(package / "pipe")
    code, err = _validate(package)
    assert code == 2
    assert "'pipe' (matched by 'pipe*') is a named pipe (FIFO); only regular files go into an image" in err
    with pytest.raises(PackageFileError, match="FIFO"):
        files.read_inside(package, "pipe")  # O_NONBLOCK: refused at once, never blocks


def test_a_socket_is_refused(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.sock"))
        selection = files.select(tmp_path, ["*.sock"])
    finally:
        server.close()
    assert selection.files == []
    assert "socket" in selection.refused["s.sock"]


def test_allowed_links_are_followed_only_inside_the_package(tmp_path: Path) -> None:
    package = _package(tmp_path, '[model.py, "*.npz"]', extra="  allow_links: true\n")
    (package / "alias.npz").symlink_to("model.npz")
    assert _validate(package)[0] == 0
    digests = model_file_digests(package, ["model.py", "*.npz"], allow_links=True)
    assert digests["alias.npz"] == digests["model.npz"]
    (package / "out.npz").symlink_to("/etc/passwd")
    code, err = _validate(package)
    assert code == 2
    assert "'out.npz' (matched by '*.npz') is a symbolic link that leads out of the package" in err
    with pytest.raises(PackageFileError, match="leads out of the package"):
        files.read_inside(package, "out.npz", allow_links=True)


def test_named_paths_follow_the_same_rule(tmp_path: Path) -> None:
    package = _package(tmp_path, "[model.py, model.npz]")
    text = (package / "omi.yaml").read_text(encoding="utf-8")
    text = text.replace("  requirements:\n    - numpy==2.4.6\n", "  requirements_file: reqs.txt\n")
    (package / "omi.yaml").write_text(text, encoding="utf-8")
    (package / "reqs.txt").symlink_to("/etc/hostname")
    code, err = _validate(package)
    assert code == 2
    assert "python.requirements_file: 'reqs.txt' is a symbolic link to '/etc/hostname'" in err
    (package / "reqs.txt").unlink()
    (package / "model.py").rename(package / "real.py")
    (package / "model.py").symlink_to("/etc/hostname")
    code, err = _validate(package)
    assert code == 2
    assert "model.entrypoint: 'model.py' is a symbolic link" in err


def test_streamed_hash_matches_and_reads_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "big.bin").write_bytes(data)
    import hashlib  # noqa: PLC0415

    assert files.sha256_inside(tmp_path, "big.bin") == "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    package = _package(tmp_path, '[model.py, model.npz, "data/*"]')
    (package / "data").mkdir()
    (package / "data" / "ok.bin").write_bytes(b"x")
    os.close(os.open(os.fsencode(package / "data") + b"/caf\xe9.bin", os.O_CREAT | os.O_WRONLY, 0o644))
    code, err = _validate(package)
    assert code == 2
    assert "is not UTF-8" in err
    assert "Traceback" not in err


def test_building_a_package_with_a_name_that_is_not_utf8_is_a_located_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    package = _package(tmp_path, "[model.py, model.npz]")
    os.close(os.open(os.fsencode(package) + b"/caf\xe9.bin", os.O_CREAT | os.O_WRONLY, 0o644))
    text = (package / "omi.yaml").read_text(encoding="utf-8").replace("model.npz]", 'model.npz, "*.bin"]')
    (package / "omi.yaml").write_text(text, encoding="utf-8")
    code, err = _build(package, tmp_path)
    assert code == 2
    assert "is not UTF-8" in err
