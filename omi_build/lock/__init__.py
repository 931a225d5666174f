"""omi.lock: every Debian package and wheel of every target and platform, pinned by sha256.

>>> from omi_build.manifest import load
>>> lock = read(load("examples/iris-sklearn"))      # doctest: +SKIP
>>> lock.platform("cpu", "linux/amd64").wheels[0].filename  # doctest: +SKIP

The lock names no hosts: files are found by their archive path (Debian) or file name (wheels)
on whichever mirror or index the configuration names, and checked against the pinned hash.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omi_build import atomic
from omi_build.digests import canonical, digest_of
from omi_build.download import Source
from omi_build.errors import FetchError, LockError
from omi_build.manifest import Manifest, files
from omi_build.platforms import arch_of, host_machine, host_platform
from omi_build.progress import Progress, Silent
from omi_build.store import Store
from omi_build.suites import SUITES

from . import _apt, _cuda, _sources, _wheels
from ._apt import DebPackage
from ._wheels import Wheel

LOCK_NAME = "omi.lock"
LOCK_VERSION = 1
# What the server in the image imports (omi_build/runtime): standard library plus these.
RUNTIME_REQUIREMENTS = ("grpcio>=1.85.1", "protobuf>=7.35.1", "numpy>=1.24")

__all__ = [
    "LOCK_NAME",
    "DebPackage",
    "Lock",
    "PlatformLock",
    "SecurityUpdate",
    "Wheel",
    "archives",
    "check",
    "deb_sources",
    "read",
    "resolve",
    "security_updates",
    "wheel_sources",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class PlatformLock:
    debian: tuple[DebPackage, ...]
    wheels: tuple[Wheel, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Lock:
    inputs: str
    targets: dict[str, dict[str, PlatformLock]]

    def platform(self, target: str, platform: str) -> PlatformLock:
        try:
            return self.targets[target][platform]
        except KeyError:
            msg = f"{LOCK_NAME} has no entry for {target} {platform}"
            raise LockError(msg, hint="run 'omi-build lock' to update it") from None

    def to_json(self) -> str:
        payload = {
            "lockVersion": LOCK_VERSION,
            "inputs": self.inputs,
            "targets": {
                target: {
                    platform: {
                        "debian": [_deb_record(p) for p in entry.debian],
                        "wheels": [w.record() for w in entry.wheels],
                    }
                    for platform, entry in sorted(platforms.items())
                }
                for target, platforms in sorted(self.targets.items())
            },
        }
        return json.dumps(payload, indent=1, sort_keys=True) + "\n"


def _deb_record(package: DebPackage) -> dict[str, Any]:
    record = asdict(package)
    del record["depends"], record["provides"]  # resolution detail, not part of the pin
    return record


def lock_path(manifest: Manifest) -> Path:
    return manifest.directory / LOCK_NAME


def requirements(manifest: Manifest, target: str) -> list[str]:
    """Everything pip-installable the image of `target` holds."""
    listed = list(manifest.python.requirements)
    if manifest.python.requirements_file:
        raw = files.read_inside(
            manifest.directory, manifest.python.requirements_file, allow_links=manifest.model.allow_links
        )
        text = raw.decode("utf-8", errors="replace")
        listed += [
            line.split("#", 1)[0].strip()
            for line in text.splitlines()
            if line.split("#", 1)[0].strip() and not line.lstrip().startswith("-")
        ]
    return [*listed, *manifest.target(target).requirements, *RUNTIME_REQUIREMENTS]


def _suite(manifest: Manifest) -> str:
    if manifest.build.base.image:
        msg = "build.base.image (an existing base image) is not supported by this omi-build yet"
        raise LockError(msg, hint="use build.base.debian, the distroless-style Debian base")
    return manifest.build.base.debian


def inputs_digest(manifest: Manifest) -> str:
    """A digest of everything resolution depends on; a different one means the lock is stale."""
    suite = _suite(manifest)
    inputs = {
        "lockVersion": LOCK_VERSION,
        "python": manifest.python.version,
        "suite": suite,
        "snapshot": manifest.build.base.snapshot,
        "base": list(SUITES[suite].base_packages),
        "excluded": sorted(_apt.EXCLUDED),
        "system": sorted(manifest.system.packages),
        # only when on, so the locks written before the switch existed stay current
        **({"sourceBuilds": True} if manifest.security.allow_source_builds else {}),
        "targets": {
            target.name: {
                "platforms": sorted(target.platforms),
                "requirements": requirements(manifest, target.name),
                "indexes": list(target.indexes),
                # only CUDA targets name one, so a CPU target's lock keeps its digest
                **({"cuda": target.cuda} if target.accelerator == "cuda" else {}),
            }
            for target in manifest.targets
        },
    }
    return digest_of(canonical(inputs))


def archives(manifest: Manifest) -> list[_apt.Archive]:
    """The Debian archives the configuration names for the manifest's suite (all three suites)."""
    base = manifest.build.base
    return _apt.archives_for(_suite(manifest), base.mirror, base.snapshot, base.security_mirror)


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class SecurityUpdate:
    """A locked Debian package that the archives now ship a newer version of."""

    name: str
    architecture: str
    locked: str
    available: str
    suite: str

    def __str__(self) -> str:
        return f"{self.name} ({self.architecture}): locked {self.locked}, {self.suite} has {self.available}"


def security_updates(
    manifest: Manifest, lock: Lock, store: Store, progress: Progress | None = None
) -> list[SecurityUpdate]:
    """Locked packages that -security or -updates of the configured archives now ship newer.

    Only the indexes are read (InRelease checked with gpgv, Packages by its hash), nothing is
    resolved: a cheap, scheduled CI check that the image still carries every security fix.
    """
    from debian.debian_support import version_compare  # noqa: PLC0415

    progress = progress or Silent()
    suite = _suite(manifest)
    newer_suites = [a for a in archives(manifest) if a.suite != suite]
    locked: dict[str, dict[str, DebPackage]] = {}
    for platforms in lock.targets.values():
        for platform, entry in platforms.items():
            for package in entry.debian:
                locked.setdefault(arch_of(platform), {})[package.name] = package
    found: set[SecurityUpdate] = set()
    for arch, packages in sorted(locked.items()):
        merged = _apt.merge(_apt.index(archive, arch, store, progress) for archive in newer_suites)
        for name, package in packages.items():
            offered = merged.get(name)
            if offered is not None and version_compare(offered.version, package.version) > 0:
                found.add(
                    SecurityUpdate(
                        name=name,
                        architecture=offered.architecture,
                        locked=package.version,
                        available=offered.version,
                        suite=offered.suite,
                    )
                )
    return sorted(found)


def resolve(manifest: Manifest, store: Store, progress: Progress | None = None) -> Lock:
    """Resolve every target and platform afresh from the archives and the index."""
    progress = progress or Silent()
    suite = _suite(manifest)
    configured = archives(manifest)
    arches = sorted({arch_of(p) for t in manifest.targets for p in t.platforms})
    roots = [*SUITES[suite].base_packages, *manifest.system.packages]
    debs: dict[str, tuple[DebPackage, ...]] = {}
    for arch in arches:
        merged = _apt.merge(_apt.index(archive, arch, store, progress) for archive in configured)
        debs[arch] = tuple(_apt.resolve(roots, merged))
    targets: dict[str, dict[str, PlatformLock]] = {}
    for target in manifest.targets:
        wanted = requirements(manifest, target.name)
        builders = _source_builder(manifest, store, target.name, progress)
        targets[target.name] = {}
        for platform in target.platforms:
            progress.step(f"resolve wheels {target.name} {platform}")
            wheels = _wheels.resolve(
                wanted,
                arch=arch_of(platform),
                suite=suite,
                python_version=manifest.python.version,
                indexes=target.indexes,
                build_source=builders(platform) if manifest.security.allow_source_builds else None,
            )
            if target.accelerator == "cuda":
                check_cuda(manifest, target.name, platform, wheels)
            targets[target.name][platform] = PlatformLock(
                debian=debs[arch_of(platform)], wheels=tuple(wheels)
            )
    return Lock(inputs=inputs_digest(manifest), targets=targets)


_ZIP_EPOCH = 315532800  # 1980-01-01: a zip (a wheel) holds no earlier time


def _sdist_epoch(manifest: Manifest) -> int:
    """The time stamp of a wheel built from an sdist: the manifest's, never the environment's
    (the wheel's sha256 is in the lock, so every later build must give the same bytes)."""
    return max(manifest.build.source_date_epoch, _ZIP_EPOCH)


def _host_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _fetch_build_wheels(
    manifest: Manifest, store: Store, target: str, wheels: list[Wheel], what: str
) -> list[tuple[_sources.Pinned, Path]]:
    """The pinned wheels of an sdist's build environment (for this machine), in the store."""
    found = _wheels.urls(
        wheels, arch=host_machine(), suite=_suite(manifest), python_version=_host_python(),
        indexes=manifest.target(target).indexes,
    )  # fmt: skip
    fetched = []
    for wheel in wheels:
        if wheel.filename not in found:
            msg = f"{what}: its build requirement {wheel.filename} is not on the package index"
            raise LockError(msg, hint="run 'omi-build lock' to re-resolve")
        path = store.fetch(found[wheel.filename], wheel.sha256, what=wheel.filename, size=wheel.size)
        fetched.append((_sources.Pinned(filename=wheel.filename, sha256=wheel.sha256, size=wheel.size), path))
    return fetched


def _build_sdist(
    manifest: Manifest, sdist: Path, *, what: str, environment: list[tuple[_sources.Pinned, Path]]
) -> tuple[str, bytes]:
    """The wheel the sdist builds into, checked to be one: (file name, bytes)."""
    _, backend = _sources.build_system(sdist)
    filename, data = _sources.build(
        sdist, what=what, build_wheels=environment, backend=backend, epoch=_sdist_epoch(manifest),
        uv=_wheels.uv(),
    )  # fmt: skip
    _sources.check_wheel(data, what=what)
    return filename, data


def _check_serves(manifest: Manifest, filename: str, platform: str, what: str) -> None:
    """A pure wheel serves every platform; a compiled one only this machine's, for its Python."""
    if _sources.is_pure(filename):
        return
    host, python = host_platform(), _host_python()
    if platform != host or python != manifest.python.version:
        msg = f"{what} has compiled code ({_sources.wheel_tags(filename)}): it builds only for this machine"
        raise LockError(
            msg,
            hint=f"this machine is {host} with Python {python}, the image {platform} with Python "
            f"{manifest.python.version}: build it there, or pin a version that publishes a wheel",
        )


def _source_builder(
    manifest: Manifest, store: Store, target: str, progress: Progress
) -> Callable[[str], _wheels.SourceBuilder]:
    """The lock's sdist builder for each platform of `target`: an sdist is built once, whatever
    number of platforms ask for it."""
    built: dict[str, Wheel] = {}  # sdist sha256 -> the wheel it built into

    def for_platform(platform: str) -> _wheels.SourceBuilder:
        def build_one(name: str, version: str, sdist: dict[str, Any]) -> Wheel:
            what = f"{name} {version}"
            pinned = _sources.Pinned(
                filename=_wheels.filename_of(str(sdist["url"])), sha256=sdist["hashes"]["sha256"],
                size=int(sdist["size"]),
            )  # fmt: skip
            if pinned.sha256 not in built:
                progress.step(f"build {what} from its sdist")
                path = store.fetch(str(sdist["url"]), pinned.sha256, what=pinned.filename, size=pinned.size)
                requires, _ = _sources.build_system(path)
                environment = _fetch_build_wheels(
                    manifest, store, target,
                    _wheels.resolve(requires, arch=host_machine(), suite=_suite(manifest),
                                    python_version=_host_python(), indexes=manifest.target(target).indexes),
                    what,
                )  # fmt: skip
                filename, data = _build_sdist(manifest, path, what=what, environment=environment)
                source = _sources.SourceBuild(sdist=pinned, build_wheels=tuple(p for p, _ in environment))
                built[pinned.sha256] = Wheel(
                    name=name, version=version, filename=filename, sha256=store.put_bytes(data).name,
                    size=len(data), source=source,
                )  # fmt: skip
            wheel = built[pinned.sha256]
            _check_serves(manifest, wheel.filename, platform, what)
            return wheel

        return build_one

    return for_platform


def build_sources(
    manifest: Manifest, store: Store, *, target: str, platform: str, wheels: Iterable[Wheel],
    progress: Progress | None = None,
) -> None:  # fmt: skip
    """Build again each locked wheel made from an sdist that the store lacks (another machine,
    an emptied cache), from the pinned sdist and build environment; FetchError if the bytes
    differ from the lock's (the sdist's build is not reproducible)."""
    progress = progress or Silent()
    for wheel in wheels:
        if wheel.source is None or store.has(wheel.sha256):
            continue
        # Platforms build side by side: the first to get here builds, the others find it built.
        with store.lock(f"sdist-{wheel.sha256}"):
            if not store.has(wheel.sha256):
                _rebuild(manifest, store, wheel, target=target, platform=platform, progress=progress)


def _rebuild(
    manifest: Manifest, store: Store, wheel: Wheel, *, target: str, platform: str, progress: Progress
) -> None:
    source = wheel.source
    assert source is not None  # noqa: S101 - the caller checked
    what = f"{wheel.name} {wheel.version}"
    progress.step(f"build {what} from its sdist")
    url = _wheels.sdist_url(
        wheel.name, wheel.version, arch=arch_of(platform), suite=_suite(manifest),
        python_version=manifest.python.version, indexes=manifest.target(target).indexes,
    )  # fmt: skip
    path = store.fetch(url, source.sdist.sha256, what=source.sdist.filename, size=source.sdist.size)
    pins = [
        Wheel(name=p.filename.split("-")[0], version=p.filename.split("-")[1], filename=p.filename,
              sha256=p.sha256, size=p.size)
        for p in source.build_wheels
    ]  # fmt: skip
    environment = _fetch_build_wheels(manifest, store, target, pins, what)
    filename, data = _build_sdist(manifest, path, what=what, environment=environment)
    _check_serves(manifest, filename, platform, what)
    sha256 = store.put_bytes(data).name
    if sha256 != wheel.sha256:
        msg = f"{what}: its sdist built into a wheel with sha256 {sha256}, the lock has {wheel.sha256}"
        raise FetchError(
            msg,
            hint="the sdist's build is not reproducible on this machine; pin a version that "
            "publishes a wheel, or run 'omi-build lock' here",
        )


def check_cuda(manifest: Manifest, target: str, platform: str, wheels: list[Wheel]) -> None:
    """A CUDA target's wheels carry CUDA libraries, all of them for the CUDA it declares;
    LockError naming each wheel that does not and the versions that would work."""
    spec = manifest.target(target)
    declared = spec.cuda or ""
    field = f"targets.{target}"
    if not _cuda.cuda_wheels(wheels):
        runtime = _cuda.counterpart("nvidia-cuda-runtime", *_cuda.declared_version(declared))
        msg = (
            f"{field} declares CUDA {declared} for {platform}, but none of its wheels carries CUDA libraries"
        )
        raise LockError(
            msg,
            hint=f"add '{runtime}' (and the other components the model uses) to {field}.requirements, "
            "or a framework that pulls them in; the image takes CUDA from NVIDIA's wheels, "
            "never from a base image",
        )
    wrong = _cuda.mismatches(declared, wheels)
    if not wrong:
        return
    working = _working_versions(manifest, target, platform, [m.instead for m in wrong])
    lines = [f"  {m.reason}; for CUDA {declared}: {working.get(m.instead) or m.instead}" for m in wrong]
    msg = f"{field} declares CUDA {declared}, but its wheels for {platform} do not match:\n" + "\n".join(
        lines
    )
    carried = max(wrong, key=lambda m: (m.found.major, m.found.minor or 0)).found.cuda
    raise LockError(
        msg,
        hint=f"pin the versions above in {field}.requirements (a framework may pin its own CUDA: pick "
        f"its build for CUDA {declared}), or declare the CUDA the wheels carry ({field}.cuda: "
        f'"{carried}")',
    )


def _working_versions(manifest: Manifest, target: str, platform: str, wanted: list[str]) -> dict[str, str]:
    """The newest version of each requirement the index has for this platform (best effort: the
    error this feeds is still clear without them)."""
    found: dict[str, str] = {}
    for requirement in dict.fromkeys(wanted):
        try:
            wheels = _wheels.resolve(
                [requirement], arch=arch_of(platform), suite=_suite(manifest),
                python_version=manifest.python.version, indexes=manifest.target(target).indexes,
                no_deps=True,
            )  # fmt: skip
        except LockError:
            continue
        found[requirement] = ", ".join(f"{w.name}=={w.version}" for w in wheels) + " would work"
    return found


def write(manifest: Manifest, lock: Lock) -> Path:
    path = lock_path(manifest)
    atomic.write_text(path, lock.to_json())
    return path


def read(manifest: Manifest) -> Lock:
    path = lock_path(manifest)
    if not path.is_file():
        msg = f"{path} does not exist"
        raise LockError(msg, hint="run 'omi-build lock' and commit the file")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("lockVersion") != LOCK_VERSION:
            found = payload.get("lockVersion")
            msg = f"{path} has lockVersion {found}, this omi-build reads {LOCK_VERSION}"
            raise LockError(msg, hint="run 'omi-build lock' to rewrite it")
        targets = {
            target: {
                platform: PlatformLock(
                    debian=tuple(DebPackage(**record) for record in entry["debian"]),
                    wheels=tuple(Wheel.from_record(record) for record in entry["wheels"]),
                )
                for platform, entry in platforms.items()
            }
            for target, platforms in payload["targets"].items()
        }
        return Lock(inputs=payload["inputs"], targets=targets)
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{path} is not a valid lock file: {exc}"
        raise LockError(msg, hint="run 'omi-build lock' to rewrite it") from exc


def check(manifest: Manifest) -> Lock:
    """The lock, if it is current; LockError if it is missing or stale."""
    lock = read(manifest)
    if lock.inputs != inputs_digest(manifest):
        msg = f"{lock_path(manifest)} is stale: omi.yaml changed since it was written"
        raise LockError(msg, hint="run 'omi-build lock' and commit the result")
    return lock


def deb_sources(manifest: Manifest, packages: Iterable[DebPackage]) -> list[Source]:
    """Where each locked Debian package is downloaded from: the configured mirror of its suite."""
    mirrors = {a.suite: a.uri for a in archives(manifest)}
    sources = []
    for package in packages:
        if package.suite not in mirrors:
            msg = f"no mirror is configured for {package.suite}, which {package.name} comes from"
            raise LockError(msg, hint="configure the suite's mirror or run 'omi-build lock'")
        sources.append(
            Source(
                sha256=package.sha256,
                size=package.size,
                what=f"{package.name} {package.version} ({package.architecture})",
                url=f"{mirrors[package.suite]}/{package.filename}",
            )
        )
    return sources


def wheel_sources(manifest: Manifest, *, target: str, platform: str, wheels: Iterable[Wheel]) -> list[Source]:
    """Where each locked wheel is downloaded from, asked of the target's package indexes."""
    wanted = [wheel for wheel in wheels if wheel.source is None]  # sdist builds: build_sources
    if not wanted:
        return []
    found = _wheels.urls(
        wanted,
        arch=arch_of(platform),
        suite=_suite(manifest),
        python_version=manifest.python.version,
        indexes=manifest.target(target).indexes,
    )
    sources = []
    for wheel in wanted:
        if wheel.filename not in found:
            msg = f"wheel {wheel.filename} is not on the package index"
            raise LockError(msg, hint="it may have been yanked; run 'omi-build lock' to re-resolve")
        sources.append(
            Source(sha256=wheel.sha256, size=wheel.size, what=wheel.filename, url=found[wheel.filename])
        )
    return sources
