"""Wheels built from sdists (security.allow_source_builds): the hook, the lock's record."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from omi_build.errors import LockError
from omi_build.lock import Wheel, _sources, _wheels

# An in-tree PEP 517 backend: builds a one-file wheel stamped with SOURCE_DATE_EPOCH, so the
# test needs no setuptools and no index.
_BACKEND = b"""
import os, time, zipfile
def build_wheel(out, config_settings=None, metadata_directory=None):
    name = "tiny-1.0-py3-none-any.whl"
    stamp = int(os.environ["SOURCE_DATE_EPOCH"])
    when = time.gmtime(stamp)[:6]
    with zipfile.ZipFile(os.path.join(out, name), "w") as wheel:
        wheel.writestr(zipfile.ZipInfo("tiny.py", when), "STAMP = %d\\n" % stamp)
        wheel.writestr(zipfile.ZipInfo("tiny-1.0.dist-info/RECORD", when), "")
    return name
"""


def _sdist(tmp_path: Path, pyproject: bytes | None) -> Path:
    path = tmp_path / "tiny-1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        files = {"tiny-1.0/backend.py": _BACKEND}
        if pyproject is not None:
            files["tiny-1.0/pyproject.toml"] = pyproject
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.integration  # starts a venv's Python (offline)
def test_an_sdist_builds_in_a_venv_of_its_pinned_wheels_with_the_epoch(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, b'[build-system]\nrequires = []\nbuild-backend = "backend"\n')
    assert _sources.build_system(sdist) == ([], "backend")
    name, data = _sources.build(
        sdist, what="tiny", build_wheels=[], backend="backend", epoch=1700000000, uv=_wheels.uv()
    )
    assert name == "tiny-1.0-py3-none-any.whl"
    assert _sources.is_pure(name)
    _sources.check_wheel(data, what="tiny")
    again = _sources.build(
        sdist, what="tiny", build_wheels=[], backend="backend", epoch=1700000000, uv=_wheels.uv()
    )
    assert again == (name, data)


def test_an_sdist_without_pyproject_gets_setuptools_legacy_backend(tmp_path: Path) -> None:
    assert _sources.build_system(_sdist(tmp_path, None)) == (["setuptools>=40.8.0"], _sources.DEFAULT_BACKEND)


@pytest.mark.integration
def test_a_failing_build_names_the_package_and_says_what_to_do(tmp_path: Path) -> None:
    sdist = _sdist(tmp_path, b'[build-system]\nrequires = []\nbuild-backend = "missing"\n')
    with pytest.raises(LockError, match="tiny: building the sdist failed") as failure:
        _sources.build(sdist, what="tiny", build_wheels=[], backend="missing", epoch=0, uv=_wheels.uv())
    assert "pin a version that publishes a wheel" in (failure.value.hint or "")


def test_compiled_wheels_are_told_from_pure_ones() -> None:
    assert _sources.is_pure("docopt-0.6.2-py2.py3-none-any.whl")
    assert not _sources.is_pure("fast-1.0-cp311-cp311-linux_x86_64.whl")
    assert _sources.wheel_tags("fast-1.0-cp311-cp311-linux_x86_64.whl") == "cp311-cp311-linux_x86_64"


def test_the_lock_records_a_source_build_and_reads_older_records() -> None:
    source = _sources.SourceBuild(
        sdist=_sources.Pinned(filename="docopt-0.6.2.tar.gz", sha256="a" * 64, size=1),
        build_wheels=(
            _sources.Pinned(filename="setuptools-80.0.0-py3-none-any.whl", sha256="b" * 64, size=2),
        ),
    )
    wheel = Wheel(name="docopt", version="0.6.2", filename="docopt-0.6.2-py2.py3-none-any.whl",
                  sha256="c" * 64, size=3, source=source)  # fmt: skip
    assert Wheel.from_record(wheel.record()) == wheel
    plain = {"name": "numpy", "version": "2.4.6", "filename": "n.whl", "sha256": "d" * 64, "size": 4}
    assert Wheel.from_record(plain).record() == plain  # no `source` key for an index wheel
