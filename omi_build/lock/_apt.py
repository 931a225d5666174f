"""Debian archives: where they are, verified indexes, and distroless-style resolution.

The mirror comes from configuration, never from this code: build.base.mirror, then the
OMI_DEBIAN_MIRROR environment variable, then the host's apt sources. InRelease is checked with
gpgv against Debian's archive keyring, Packages against the hash InRelease gives.
"""

from __future__ import annotations

import lzma
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omi_build import settings
from omi_build.errors import LockError, ToolError
from omi_build.progress import Progress
from omi_build.store import Store, open_url, with_retries

DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")

# Never installed, even when something depends on them: a container needs no package manager,
# shell, configuration frontend or init system (maintainer scripts never run here).
EXCLUDED = frozenset(
    {
        "dpkg",
        "debconf",
        "debconf-2.0",
        "perl-base",
        "perl",
        "mawk",
        "awk",
        "tar",
        "debianutils",
        "dash",
        "bash",
        "coreutils",
        "sensible-utils",
        "init-system-helpers",
        "lsb-base",
        "sysvinit-utils",
        "usrmerge",
        "usr-is-merged",
        "openssl",
        "install-info",
        "libc-bin",
        "readline-common",
        "cdebconf",
        "gpgv",
        "apt",
    }
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Archive:
    """One suite of one mirror."""

    uri: str
    suite: str
    keyring: Path = DEFAULT_KEYRING


@dataclass(frozen=True, kw_only=True, slots=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    filename: str
    sha256: str
    size: int
    suite: str
    depends: str = ""
    provides: str = ""


def _one_line_sources(text: str) -> Iterable[tuple[str, list[str], list[str], Path | None]]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        keyring = None
        options = re.search(r"\[(.*?)\]", line)
        if options:
            signed = re.search(r"signed-by=(\S+)", options.group(1))
            keyring = Path(signed.group(1)) if signed else None
            line = line.replace(options.group(0), "")
        parts = line.split()
        if len(parts) >= 4:
            yield parts[1], [parts[2]], parts[3:], keyring


def _deb822_sources(text: str) -> Iterable[tuple[str, list[str], list[str], Path | None]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        signed = fields.get("signed-by", "")
        keyring = Path(signed) if signed.startswith("/") else None
        for uri in fields.get("uris", "").split():
            yield (
                uri,
                fields.get("suites", "").split(),
                fields.get("components", "").split(),
                keyring,
            )


def host_archives(suite: str) -> list[Archive]:
    """The host's apt sources for `suite`, -updates and -security, component main."""
    entries = []
    if APT_SOURCES.is_file():
        entries += list(_one_line_sources(APT_SOURCES.read_text(encoding="utf-8")))
    if APT_SOURCES_DIR.is_dir():
        for path in sorted(APT_SOURCES_DIR.iterdir()):
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".list":
                entries += list(_one_line_sources(text))
            elif path.suffix == ".sources":
                entries += list(_deb822_sources(text))
    wanted = set(suites_of(suite))
    archives = []
    for uri, suites, components, keyring in entries:
        if "main" not in components:
            continue
        for name in suites:
            if name in wanted:
                archives.append(Archive(uri=uri.rstrip("/"), suite=name, keyring=keyring or DEFAULT_KEYRING))
    return archives


def suites_of(suite: str) -> tuple[str, str, str]:
    """A Debian release's three suites: the release, its point updates and its security fixes."""
    return suite, f"{suite}-updates", f"{suite}-security"


def _security_sibling(url: str) -> str | None:
    """Debian's own layout: the security archive beside the main one, '.../debian' then
    '.../debian-security' (deb.debian.org, snapshot.debian.org and most mirrors)."""
    head, _, query = url.partition("?")
    parts = head.rstrip("/").split("/")
    for index in range(len(parts) - 1, 2, -1):  # past 'scheme:', '' and the host
        if parts[index] == "debian":
            parts[index] = "debian-security"
            return "/".join(parts) + (f"?{query}" if query else "")
    return None


def _host_security(suite: str) -> str | None:
    found = [a.uri for a in host_archives(suite) if a.suite == f"{suite}-security"]
    return found[0] if found else None


def _three(suite: str, base: str, security: str) -> list[Archive]:
    main, updates, security_suite = suites_of(suite)
    return [
        Archive(uri=base, suite=main),
        Archive(uri=base, suite=updates),
        Archive(uri=security.rstrip("/"), suite=security_suite),
    ]


def archives_for(
    suite: str, mirror: str | None, snapshot: str | None, security_mirror: str | None = None
) -> list[Archive]:
    """The archives to resolve from: always the suite, -updates and -security.

    A mirror (build.base.mirror, else OMI_DEBIAN_MIRROR) serves the first two; Debian's
    security archive is a separate archive, so it has its own base: build.base.security_mirror,
    else OMI_DEBIAN_SECURITY_MIRROR, else the mirror's '.../debian' as '.../debian-security',
    else this host's apt sources. Snapshots likewise (OMI_DEBIAN_SECURITY_SNAPSHOT_URL). Never
    silently without security updates: no base for them is an error.
    """
    if snapshot:
        template = settings.debian_snapshot_url()
        if not template or "{snapshot}" not in template:
            msg = "build.base.snapshot needs a snapshot mirror"
            raise LockError(
                msg,
                hint="set OMI_DEBIAN_SNAPSHOT_URL to the mirror's URL with a {snapshot} "
                "placeholder for the time stamp",
            )
        security_template = settings.debian_security_snapshot_url() or _security_sibling(template)
        if not security_template or "{snapshot}" not in security_template:
            msg = f"no snapshot of Debian's security archive is configured for {suite}-security"
            raise LockError(
                msg,
                hint="set OMI_DEBIAN_SECURITY_SNAPSHOT_URL to its URL with a {snapshot} placeholder",
            )
        return _three(
            suite,
            template.replace("{snapshot}", snapshot).rstrip("/"),
            security_template.replace("{snapshot}", snapshot),
        )
    configured = mirror or settings.debian_mirror()
    if configured:
        security = (
            security_mirror
            or settings.debian_security_mirror()
            or _security_sibling(configured)
            or _host_security(suite)
        )
        if not security:
            msg = f"no mirror of Debian's security archive is configured for {suite}-security"
            raise LockError(
                msg,
                hint=f"{configured} is not laid out like Debian's ('.../debian'); set "
                "build.base.security_mirror or OMI_DEBIAN_SECURITY_MIRROR to the security archive",
            )
        return _three(suite, configured.rstrip("/"), security)
    found = host_archives(suite)
    if not found:
        msg = f"no Debian mirror is configured for {suite}"
        raise LockError(
            msg,
            hint="set build.base.mirror in omi.yaml or OMI_DEBIAN_MIRROR, or add the suite "
            "to this host's apt sources",
        )
    explicit_security = security_mirror or settings.debian_security_mirror()
    if explicit_security:
        found = [a for a in found if a.suite != f"{suite}-security"]
        found.append(Archive(uri=explicit_security.rstrip("/"), suite=f"{suite}-security"))
    # -updates only where the host has it; security fixes are never optional.
    missing = [name for name in (suite, f"{suite}-security") if name not in {a.suite for a in found}]
    if missing:
        msg = f"this host's apt sources have no {' or '.join(missing)}"
        raise LockError(
            msg,
            hint="add it to the apt sources, or set build.base.mirror (or OMI_DEBIAN_MIRROR) "
            "and OMI_DEBIAN_SECURITY_MIRROR",
        )
    return found


def _gpgv(signed: bytes, keyring: Path, what: str) -> bytes:
    if not keyring.is_file():
        msg = f"the archive keyring {keyring} is missing"
        raise ToolError(msg, hint="install Debian's keyring: apt-get install debian-archive-keyring")
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch, "InRelease")
        source.write_bytes(signed)
        try:
            result = subprocess.run(
                ["gpgv", "--quiet", "--keyring", str(keyring), "--output", "-", str(source)],
                capture_output=True,
                check=False,
            )
        except FileNotFoundError as exc:
            msg = "gpgv is not installed"
            raise ToolError(msg, hint="apt-get install gpgv") from exc
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip()
        msg = f"the signature of {what} does not verify: {detail}"
        raise LockError(msg, hint="the mirror may be tampered with or out of date")
    return result.stdout


def _read(url: str, what: str) -> bytes:
    chunks: list[bytes] = []

    def attempt() -> None:
        chunks.clear()
        with open_url(url) as response:
            chunks.append(response.read())

    with_retries(what, url, attempt)
    return b"".join(chunks)


def _release_hashes(release: str) -> dict[str, tuple[str, int]]:
    hashes: dict[str, tuple[str, int]] = {}
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        if in_sha256:
            digest, size, path = line.split()
            hashes[path] = (digest, int(size))
    return hashes


def _parse_packages(text: str, suite: str) -> dict[str, DebPackage]:
    packages: dict[str, DebPackage] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.split("\n"):
            if line and line[0] not in " \t":
                key, _, value = line.partition(": ")
                fields[key] = value
        name = fields.get("Package")
        if not name or "Filename" not in fields:
            continue
        packages[name] = DebPackage(
            name=name,
            version=fields["Version"],
            architecture=fields["Architecture"],
            filename=fields["Filename"],
            sha256=fields["SHA256"],
            size=int(fields["Size"]),
            suite=suite,
            depends=", ".join(filter(None, (fields.get("Pre-Depends"), fields.get("Depends")))),
            provides=fields.get("Provides", ""),
        )
    return packages


def index(archive: Archive, arch: str, store: Store, progress: Progress) -> dict[str, DebPackage]:
    """The verified Packages index of one archive for one architecture."""
    what = f"{archive.suite} InRelease"
    release = _gpgv(_read(f"{archive.uri}/dists/{archive.suite}/InRelease", what), archive.keyring, what)
    hashes = _release_hashes(release.decode("utf-8", errors="replace"))
    path = f"main/binary-{arch}/Packages.xz"
    if path not in hashes:
        msg = f"{archive.suite} has no {path}"
        raise LockError(msg, hint=f"is {arch} a Debian architecture of {archive.suite}?")
    digest, size = hashes[path]
    progress.step(f"index {archive.suite}/{arch}")
    blob = store.fetch(
        f"{archive.uri}/dists/{archive.suite}/{path}",
        digest,
        what=f"{archive.suite} {path}",
        size=size,
        progress=progress,
    )
    return _parse_packages(
        lzma.decompress(blob.read_bytes()).decode("utf-8", errors="replace"), archive.suite
    )


def merge(indexes: Iterable[dict[str, DebPackage]]) -> dict[str, DebPackage]:
    """Each package at its highest version across archives (security and updates win)."""
    from debian.debian_support import version_compare  # noqa: PLC0415 - only the resolver needs it

    merged: dict[str, DebPackage] = {}
    for packages in indexes:
        for name, package in packages.items():
            best = merged.get(name)
            if best is None or version_compare(package.version, best.version) > 0:
                merged[name] = package
    return merged


def _names(field: str) -> Iterable[list[str]]:
    """Depends: 'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']]."""
    for clause in field.split(","):
        alternatives = []
        for alternative in clause.split("|"):
            name = alternative.strip().split(" ", 1)[0].split("(", 1)[0].split(":", 1)[0]
            if name:
                alternatives.append(name)
        if alternatives:
            yield alternatives


def resolve(roots: Iterable[str], packages: dict[str, DebPackage]) -> list[DebPackage]:
    """Roots plus their dependencies, minus EXCLUDED; virtual names through Provides."""
    providers: dict[str, str] = {}
    for package in packages.values():
        for provided in _names(package.provides):
            providers.setdefault(provided[0], package.name)
    chosen: dict[str, DebPackage] = {}
    queue = [(name, "the base") for name in roots]
    while queue:
        name, wanted_by = queue.pop(0)
        if name in chosen or name in EXCLUDED:
            continue
        found = packages.get(name) or packages.get(providers.get(name, ""))
        if found is None:
            msg = f"Debian package '{name}' (wanted by {wanted_by}) is not in the archive"
            raise LockError(msg, hint="check the name in system.packages, or the Debian suite")
        package = found
        if package.name in chosen:
            continue
        chosen[package.name] = package
        for alternatives in _names(package.depends):
            if any(alt in chosen or alt in EXCLUDED for alt in alternatives):
                continue
            available = [alt for alt in alternatives if alt in packages or alt in providers]
            if not available:
                choices = " | ".join(alternatives)
                msg = f"no alternative of '{choices}' (needed by {package.name}) is in the archive"
                raise LockError(msg, hint="the archive is incomplete, or the suite is wrong")
            queue.append((available[0], package.name))
    return sorted(chosen.values(), key=lambda p: p.name)
