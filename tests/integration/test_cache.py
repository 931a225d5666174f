"""The cache under pressure: two builds at once, and a build killed halfway."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omi_build.build import BuiltImage
from omi_build.layers import _unpack

from .conftest import copy_example

pytestmark = pytest.mark.integration
TOOL = [sys.executable, "-m", "omi_build"]


def _build_command(example: Path, output: Path) -> list[str]:
    return [
        *TOOL,
        "--format",
        "json",
        "build",
        str(example),
        "--platform",
        "linux/amd64",
        "--output",
        str(output),
    ]


def _environment(cache: Path) -> dict[str, str]:
    environment = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    environment.pop("SOURCE_DATE_EPOCH", None)
    return environment


def _assert_consistent(cache: Path) -> None:
    """Every named entry is whole: blobs match their names, unpacked forms their checksums."""
    blobs = [p for p in (cache / "blobs" / "sha256").iterdir() if not p.name.startswith(".")]
    assert blobs
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for stored in (cache / "unpacked").glob("[!.]*"):
        _unpack.decode(stored.read_bytes())  # raises if cut short or damaged
    for record in (cache / "layers").glob("[!.]*.json"):
        digest = json.loads(record.read_text())["blob"]["digest"].removeprefix("sha256:")
        assert (cache / "blobs" / "sha256" / digest).is_file()


def _start_build(example: Path, output: Path, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _build_command(example, output),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(cache),
    )


def _wait_until_unpacking(cache: Path, entries: int) -> None:
    """Until `entries` archives are unpacked: downloads, unpacking and compiling under way."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((cache / "unpacked").glob("[!.]*"))) < entries:
        time.sleep(0.05)


def _amd64(images: list[BuiltImage]) -> str:
    return next(i.digest for i in images if i.platform == "linux/amd64")


def test_two_builds_at_once_share_one_cache(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    _, images = iris_build
    example = copy_example(tmp_path)
    cache = tmp_path / "cache"
    builds = [_start_build(example, tmp_path / f"out{n}", cache) for n in range(2)]
    outcomes = [build.communicate(timeout=300) for build in builds]
    for build, (_, stderr) in zip(builds, outcomes, strict=True):
        assert build.returncode == 0, stderr
    digests = [json.loads(stdout)[0]["digest"] for stdout, _ in outcomes]
    assert digests == [_amd64(images), _amd64(images)]
    _assert_consistent(cache)


def test_a_build_killed_halfway_leaves_the_cache_usable(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    _, images = iris_build
    example = copy_example(tmp_path)
    cache = tmp_path / "cache"
    build = _start_build(example, tmp_path / "out", cache)
    _wait_until_unpacking(cache, 3)
    assert build.poll() is None, "the build ended before it could be killed"
    build.send_signal(signal.SIGKILL)
    build.communicate(timeout=30)
    _assert_consistent(cache)
    again = subprocess.run(
        _build_command(example, tmp_path / "out"),
        capture_output=True,
        text=True,
        env=_environment(cache),
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["digest"] == _amd64(images)
    _assert_consistent(cache)


def test_cleaning_the_cache_waits_for_no_build(tmp_path: Path) -> None:
    example = copy_example(tmp_path)
    cache = tmp_path / "cache"
    build = _start_build(example, tmp_path / "out", cache)
    _wait_until_unpacking(cache, 1)
    clean = subprocess.run(
        [*TOOL, "cache", "clean"], capture_output=True, text=True, env=_environment(cache), check=False
    )
    _, stderr = build.communicate(timeout=300)
    assert build.returncode == 0, stderr  # the build was not disturbed
    assert clean.returncode == 1
    assert "a build is using the cache" in clean.stderr
    after = subprocess.run(
        [*TOOL, "cache", "clean"], capture_output=True, text=True, env=_environment(cache), check=False
    )
    assert after.returncode == 0, after.stderr
    assert [p.name for p in cache.iterdir()] == ["locks"]
