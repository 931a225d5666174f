"""Python wheels for a target platform and Python version, resolved by uv.

uv resolves for another platform without running its interpreter (`--python-platform`), and
`--only-binary :all:` keeps it from building sdists with the host's Python. Its index comes
from uv's own configuration (uv.toml, UV_INDEX_URL, UV_DEFAULT_INDEX), never from this code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from omi_build import settings
from omi_build.errors import LockError, ToolError
from omi_build.suites import SUITES

from ._sources import SourceBuild

_UV_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# What uv prints when the index, not the requirements, is the problem.
_NETWORK_SIGNS = (
    "Failed to fetch", "error sending request", "timed out", "dns error", "Connection refused",
    "Could not connect", "tcp connect error", "operation timed out", "Network unreachable",
)  # fmt: skip
_INDEX_HINT = (
    "the package index could not be reached: check the network and uv's index configuration "
    "(UV_INDEX_URL, UV_DEFAULT_INDEX or uv.toml) or targets.<name>.indexes; OMI_NETWORK_TIMEOUT "
    "sets how long it may stay silent"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Wheel:
    name: str
    version: str
    filename: str
    sha256: str
    size: int
    source: SourceBuild | None = None  # built from an sdist (security.allow_source_builds)

    def record(self) -> dict[str, object]:
        """The lock's entry (no `source` key for a wheel from the index)."""
        record: dict[str, object] = {
            "name": self.name, "version": self.version, "filename": self.filename,
            "sha256": self.sha256, "size": self.size,
        }  # fmt: skip
        if self.source is not None:
            record["source"] = self.source.to_json()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Wheel:
        raw = dict(record)
        source = raw.pop("source", None)
        return cls(**raw, source=SourceBuild.from_json(source) if source is not None else None)


# Builds a wheel from a package's sdist entry (uv's pylock record): the caller's, as it holds
# the store the sdist and the build environment are downloaded into.
SourceBuilder = Callable[[str, str, dict[str, Any]], Wheel]


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        msg = "uv is not installed"
        raise ToolError(msg, hint="pip install uv (it comes with omi-build's dependencies)")
    return found


def uv_platform(arch: str, suite: str) -> str:
    return f"{_UV_ARCH[arch]}-manylinux_{SUITES[suite].glibc}"


def _compile(
    requirements: Iterable[str],
    *,
    arch: str,
    suite: str,
    python_version: str,
    indexes: Iterable[str],
    no_deps: bool = False,
    allow_source: bool = False,
) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "requirements.in")
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        output = Path(scratch, "pylock.toml")
        command = [
            uv(),
            "pip",
            "compile",
            str(source),
            "--python-platform",
            uv_platform(arch, suite),
            "--python-version",
            python_version,
            *(() if allow_source else ("--only-binary", ":all:")),
            "--format",
            "pylock.toml",
            "--output-file",
            str(output),
            "--quiet",
            "--no-header",
        ]
        if no_deps:
            command.append("--no-deps")
        for url in indexes:
            command += ["--extra-index-url", url]
        # uv's own timeouts (30 s, 3 retries) would let a silent index hold a build for minutes;
        # it gets omi-build's unless the user set uv's, and the whole call has a deadline.
        timeout, attempts = settings.network_timeout_s(), settings.network_attempts()
        env = {
            "UV_HTTP_TIMEOUT": str(max(1, round(timeout))),
            "UV_HTTP_RETRIES": str(attempts - 1),
            **os.environ,
            "UV_NO_PROGRESS": "1",
        }
        deadline = max(120.0, 4 * timeout * attempts)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, check=False, env=env, timeout=deadline
            )
        except subprocess.TimeoutExpired as exc:
            msg = f"the package index did not answer uv within {deadline:.0f} s (linux/{arch})"
            raise LockError(msg, hint=_INDEX_HINT) from exc
        if result.returncode != 0:
            detail = result.stderr.strip().replace("\n", "\n  ")
            msg = f"cannot resolve the Python requirements for linux/{arch}:\n  {detail}"
            if any(sign in result.stderr for sign in _NETWORK_SIGNS):
                raise LockError(msg, hint=_INDEX_HINT)
            if "building from source is disabled" in result.stderr:
                raise LockError(
                    msg,
                    hint="a package has no wheel for this platform: pin a version that publishes one, "
                    "or set security.allow_source_builds: true to build it from its sdist",
                )
            raise LockError(
                msg,
                hint="each package needs a wheel for this platform and Python "
                f"{python_version} (manylinux, glibc {SUITES[suite].glibc.replace('_', '.')}); "
                "pin a version that has one, or drop the platform",
            )
        packages: list[dict[str, object]] = tomllib.loads(output.read_text(encoding="utf-8")).get(
            "packages", []
        )
    return packages


def filename_of(url: str) -> str:
    return unquote(Path(urlparse(url).path).name)


def resolve(
    requirements: Iterable[str],
    *,
    arch: str,
    suite: str,
    python_version: str,
    indexes: Iterable[str] = (),
    no_deps: bool = False,
    build_source: SourceBuilder | None = None,
) -> list[Wheel]:
    """One wheel per package, for this platform, pinned by sha256; a package with an sdist
    only is built by `build_source` when given (else LockError)."""
    wheels = []
    for package in _compile(
        requirements, arch=arch, suite=suite, python_version=python_version, indexes=indexes,
        no_deps=no_deps, allow_source=build_source is not None,
    ):  # fmt: skip
        files = package.get("wheels")
        name = str(package["name"])
        if not isinstance(files, list) or not files:
            sdist = package.get("sdist")
            if build_source is not None and isinstance(sdist, dict):
                wheels.append(build_source(name, str(package["version"]), sdist))
                continue
            msg = f"'{name}' has no wheel for linux/{arch} and Python {python_version}"
            raise LockError(
                msg,
                hint="pin a version that publishes a wheel for this platform, drop the platform "
                "from the target, or set security.allow_source_builds: true to build its sdist",
            )
        # Several wheels can fit (an abi3 build and a pure one): take the compiled one.
        wheel = min(files, key=lambda w: filename_of(w["url"]).endswith("-none-any.whl"))
        wheels.append(
            Wheel(
                name=name,
                version=str(package["version"]),
                filename=filename_of(wheel["url"]),
                sha256=wheel["hashes"]["sha256"],
                size=int(wheel["size"]),
            )
        )
    return sorted(wheels, key=lambda w: w.name)


def sdist_url(name: str, version: str, *, arch: str, suite: str, python_version: str,
              indexes: Iterable[str] = ()) -> str:  # fmt: skip
    """Where the index has the sdist of name==version."""
    for package in _compile(
        [f"{name}=={version}"], arch=arch, suite=suite, python_version=python_version, indexes=indexes,
        no_deps=True, allow_source=True,
    ):  # fmt: skip
        sdist = package.get("sdist")
        if isinstance(sdist, dict):
            return str(sdist["url"])
    msg = f"the package index has no sdist of {name} {version}"
    raise LockError(msg, hint="it may have been removed; run 'omi-build lock' to re-resolve")


def urls(
    wheels: Iterable[Wheel],
    *,
    arch: str,
    suite: str,
    python_version: str,
    indexes: Iterable[str] = (),
) -> dict[str, str]:
    """Download URLs of locked wheels, asked of the configured index (the lock keeps no hosts)."""
    pins = [f"{wheel.name}=={wheel.version}" for wheel in wheels]
    if not pins:
        return {}
    found = {}
    for package in _compile(
        pins, arch=arch, suite=suite, python_version=python_version, indexes=indexes, no_deps=True
    ):
        for wheel in package.get("wheels", []):  # type: ignore[attr-defined]
            found[filename_of(wheel["url"])] = wheel["url"]
    return found
