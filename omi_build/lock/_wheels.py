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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from omi_build import settings
from omi_build.errors import LockError, ToolError
from omi_build.suites import SUITES

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


def _uv() -> str:
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
) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "requirements.in")
        source.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        output = Path(scratch, "pylock.toml")
        command = [
            _uv(),
            "pip",
            "compile",
            str(source),
            "--python-platform",
            uv_platform(arch, suite),
            "--python-version",
            python_version,
            "--only-binary",
            ":all:",
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


def _filename(url: str) -> str:
    return unquote(Path(urlparse(url).path).name)


def resolve(
    requirements: Iterable[str],
    *,
    arch: str,
    suite: str,
    python_version: str,
    indexes: Iterable[str] = (),
    no_deps: bool = False,
) -> list[Wheel]:
    """One wheel per package, for this platform, pinned by sha256."""
    wheels = []
    for package in _compile(
        requirements, arch=arch, suite=suite, python_version=python_version, indexes=indexes, no_deps=no_deps
    ):
        files = package.get("wheels")
        name = str(package["name"])
        if not isinstance(files, list) or not files:
            msg = f"'{name}' has no wheel for linux/{arch} and Python {python_version}"
            raise LockError(
                msg,
                hint="source builds are not supported yet; pin a version that publishes a wheel "
                "for this platform, or drop the platform from the target",
            )
        # Several wheels can fit (an abi3 build and a pure one): take the compiled one.
        wheel = min(files, key=lambda w: _filename(w["url"]).endswith("-none-any.whl"))
        wheels.append(
            Wheel(
                name=name,
                version=str(package["version"]),
                filename=_filename(wheel["url"]),
                sha256=wheel["hashes"]["sha256"],
                size=int(wheel["size"]),
            )
        )
    return sorted(wheels, key=lambda w: w.name)


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
            found[_filename(wheel["url"])] = wheel["url"]
    return found
