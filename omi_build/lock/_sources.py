"""Wheels built from sdists, for `security.allow_source_builds`.

The sdist and every package of the build environment are pinned by sha256 in the lock; the
environment is a fresh venv holding those wheels only (no index is asked while building), the
PEP 517 backend runs with SOURCE_DATE_EPOCH set, and the wheel's own sha256 goes into the
lock: a later build on another machine builds it again and must get the same bytes.
A pure-Python sdist gives a py3-none-any wheel that serves every platform; one with compiled
code builds only for the host's platform.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from omi_build.errors import LockError

# What pip assumes of an sdist without pyproject.toml (PEP 517's fallback).
DEFAULT_REQUIRES = ("setuptools>=40.8.0",)
DEFAULT_BACKEND = "setuptools.build_meta:__legacy__"
_BUILD_TIMEOUT_S = 600
_PURE = re.compile(r"-(py3|py2\.py3)-none-any\.whl$")

# Runs inside the build venv: the PEP 517 hook, nothing else (what `python -m build` would do
# without its isolation, which the venv already gives).
_HOOK = """
import importlib, json, sys
target, out = sys.argv[1], sys.argv[2]  # setuptools' hooks rewrite sys.argv
module, _, attribute = target.partition(":")
backend = importlib.import_module(module)
for part in filter(None, attribute.split(".")):
    backend = getattr(backend, part)
wanted = backend.get_requires_for_build_wheel({}) if hasattr(backend, "get_requires_for_build_wheel") else []
print(json.dumps({"wheel": backend.build_wheel(out), "requires": list(wanted)}))
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Pinned:
    """A file the lock pins: its name, sha256 and size."""

    filename: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SourceBuild:
    """How a locked wheel was made: its sdist, and the wheels of its build environment."""

    sdist: Pinned
    build_wheels: tuple[Pinned, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "sdist": dataclasses.asdict(self.sdist),
            "buildWheels": [dataclasses.asdict(w) for w in self.build_wheels],
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Self:
        return cls(sdist=Pinned(**raw["sdist"]), build_wheels=tuple(Pinned(**w) for w in raw["buildWheels"]))


def build_system(sdist: Path) -> tuple[list[str], str]:
    """The sdist's build requirements and backend (pyproject.toml, else setuptools')."""
    with tarfile.open(sdist) as archive:
        found = [m for m in archive.getmembers() if m.isfile() and m.name.count("/") == 1]
        pyproject = next((m for m in found if m.name.endswith("/pyproject.toml")), None)
        if pyproject is None:
            return list(DEFAULT_REQUIRES), DEFAULT_BACKEND
        handle = archive.extractfile(pyproject)
        assert handle is not None  # noqa: S101 - a regular file
        table = tomllib.loads(handle.read().decode()).get("build-system", {})
    return list(table.get("requires", DEFAULT_REQUIRES)), str(table.get("build-backend", DEFAULT_BACKEND))


def build(
    sdist: Path,
    *,
    what: str,
    build_wheels: list[tuple[Pinned, Path]],
    backend: str,
    epoch: int,
    uv: str,
) -> tuple[str, bytes]:
    """The wheel `sdist` builds into in a venv holding `build_wheels` only: (file name, bytes)."""
    # One fixed path per build: nothing of a random temporary name can reach the wheel.
    with tempfile.TemporaryDirectory(prefix="omi-sdist-") as scratch:
        root = Path(scratch)
        wheels = root / "wheels"
        wheels.mkdir()
        for pinned, path in build_wheels:
            shutil.copyfile(path, wheels / pinned.filename)
        venv = root / "venv"
        env = {"PATH": os.environ.get("PATH", ""), "HOME": scratch, "SOURCE_DATE_EPOCH": str(epoch),
               "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8", "TZ": "UTC"}  # fmt: skip
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], what=what, env=env)
        if build_wheels:
            _run(
                [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-index", "--no-deps",
                 "--offline", *(str(wheels / p.filename) for p, _ in build_wheels)],
                what=what, env={**env, "UV_NO_CACHE": "1"},
            )  # fmt: skip
        source = root / "source"
        source.mkdir()
        with tarfile.open(sdist) as archive:
            archive.extractall(source, filter="data")
        tops = [p for p in source.iterdir() if p.is_dir()]
        if len(tops) != 1:
            msg = f"{what}: the sdist does not hold one top folder"
            raise LockError(msg, hint="pin a version that publishes a wheel")
        out = root / "dist"
        out.mkdir()
        result = _run(
            [str(venv / "bin" / "python"), "-c", _HOOK, backend, str(out)], what=what, env=env, cwd=tops[0]
        )
        reply = json.loads(result.stdout.strip().splitlines()[-1])
        missing = [r for r in reply["requires"] if not _installed(r, build_wheels)]
        if missing:
            msg = f"{what}: its build backend asks for {', '.join(missing)} beyond build-system.requires"
            raise LockError(msg, hint="pin a version that publishes a wheel")
        name = str(reply["wheel"])
        return name, (out / name).read_bytes()


def _installed(requirement: str, wheels: list[tuple[Pinned, Path]]) -> bool:
    name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("-", "_")
    return any(p.filename.lower().startswith(name + "-") for p, _ in wheels)


def _run(command: list[str], *, what: str, env: dict[str, str], cwd: Path | None = None) -> Any:
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=cwd, timeout=_BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"{what}: building the sdist took over {_BUILD_TIMEOUT_S} s"
        raise LockError(msg, hint="pin a version that publishes a wheel") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:].replace("\n", "\n  ")
        msg = f"{what}: building the sdist failed:\n  {detail}"
        raise LockError(msg, hint="pin a version that publishes a wheel, or fix the sdist's build")
    return result


def is_pure(filename: str) -> bool:
    return bool(_PURE.search(filename))


def wheel_tags(filename: str) -> str:
    return "-".join(filename.removesuffix(".whl").split("-")[-3:])


def check_wheel(data: bytes, *, what: str) -> None:
    """A built wheel is a readable zip with a RECORD (what the layer builder unpacks)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if not any(n.endswith(".dist-info/RECORD") for n in archive.namelist()):
                msg = f"{what}: the built wheel has no RECORD"
                raise LockError(msg)
    except zipfile.BadZipFile as exc:
        msg = f"{what}: the build did not give a wheel: {exc}"
        raise LockError(msg) from exc


__all__ = ["Pinned", "SourceBuild", "build", "build_system", "check_wheel", "is_pure", "wheel_tags"]
