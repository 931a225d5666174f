"""The security policy (the manifest's `security`), checked by every build before anything is
written to the output, and printed rule by rule by `omi-build policy`.

Each rule gives a `Result`: what it checked, what it found and, when it fails, the offending
items and how to allow them. Model files are checked before any layer is built; packages,
file modes and size once the layers are (from what each layer recorded in the cache, so a
cached layer is never read again).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, MutableMapping, Sequence
from functools import cache
from typing import Any

from omi_build.digests import canonical, digest_of
from omi_build.errors import PolicyError
from omi_build.layers import Component, Layer
from omi_build.lock import PlatformLock
from omi_build.manifest import Manifest
from omi_build.outcome import Result
from omi_build.sbom import license_expression

from ._secrets import looks_secret

SIZE_UNITS = {
    "B": 1,
    "kB": 1000,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?(B|kB|KB|MB|GB|KiB|MiB|GiB)$")


def enforce(results: Iterable[Result]) -> list[Result]:
    """The results, or a PolicyError naming the first rule broken, its items and the fix."""
    results = list(results)
    for result in results:
        if not result.ok:
            where = f" ({result.platform})" if result.platform else ""
            shown = ", ".join(result.offending[:5]) + (
                f" and {len(result.offending) - 5} more" if len(result.offending) > 5 else ""
            )
            msg = f"security policy, rule {result.rule}{where}: {shown}"
            raise PolicyError(msg, hint=result.hint, results=tuple(results))
    return results


def parse_size(text: str) -> int:
    """Bytes in a size such as '150MB' or '2GiB' (the schema's pattern)."""
    match = _SIZE.match(text.strip())
    if match is None:
        msg = f"'{text}' is not a size"
        raise ValueError(msg)
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


# -- before building: the manifest and the model files ------------------------------------


def check_model(
    manifest: Manifest, model_files: Iterable[str], lock_entries: Sequence[tuple[str, PlatformLock]]
) -> list[Result]:
    """The rules that need no layer: the user, hash pins, wheels only, and secrets among the
    model files (paths relative to omi.yaml, as the build found them)."""
    security = manifest.security
    results = [
        Result(
            rule="user",
            platform="",
            checked="security.user",
            found=f"uid {security.user}",
            offending=("uid 0 (root)",) if security.user == 0 else (),
            hint="set security.user to a non-zero uid (default 65532)",
        )
    ]
    unpinned = [
        f"{name} ({platform})"
        for platform, entry in lock_entries
        for name, sha in [
            *((d.name, d.sha256) for d in entry.debian),
            *((w.name, w.sha256) for w in entry.wheels),
        ]
        if not re.fullmatch(r"[0-9a-f]{64}", sha)
    ]
    inputs = sum(len(e.debian) + len(e.wheels) for _, e in lock_entries)
    results.append(
        Result(
            rule="hash-pinned",
            platform="",
            checked=f"{inputs} locked Debian packages and wheels",
            found="every one pinned by sha256" if not unpinned else f"{len(unpinned)} without a sha256",
            offending=tuple(unpinned),
            hint="run omi-build lock again: the lock pins every input by sha256",
        )
    )
    wheels = sum(len(e.wheels) for _, e in lock_entries)
    built = sorted(
        {f"{w.name} {w.version} (from {w.source.sdist.filename})" for _, e in lock_entries for w in e.wheels
         if w.source is not None}
    )  # fmt: skip
    allowed = security.allow_source_builds
    results.append(
        Result(
            rule="wheels-only",
            platform="",
            checked=f"{wheels} locked Python packages",
            found="all are wheels from the index"
            if not built
            else f"{len(built)} built from sdists (hash-pinned sdist and build environment)",
            offending=() if allowed else tuple(built),
            hint="set security.allow_source_builds: true to build sdists, or pin versions with wheels",
        )
    )
    results.append(check_secrets(manifest, model_files))
    return results


def check_secrets(manifest: Manifest, model_files: Iterable[str]) -> Result:
    """Model files that look like credentials, unless security.allow_secret_files lists them."""
    allowed = manifest.security.allow_secret_files
    found, waived = [], 0
    names = sorted(model_files)
    for name in names:
        reason = looks_secret(name, manifest.directory / name)
        if reason is None:
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed):
            waived += 1
            continue
        found.append(f"{name} ({reason})")
    return Result(
        rule="secrets",
        platform="",
        checked=f"{len(names)} model files (names and contents)",
        found=(f"{len(found)} that look like secrets" if found else "none that look like secrets")
        + (f"; {waived} allowed by security.allow_secret_files" if waived else ""),
        offending=tuple(found),
        hint="remove them from model.files (and rotate them if they were ever committed), or list "
        "them in security.allow_secret_files if they are not secrets",
    )


# -- once the layers are built: packages, modes, size -----------------------------------------


@cache
def _licensing() -> Any:
    from license_expression import get_spdx_licensing  # noqa: PLC0415 - 100 ms, only when used

    return get_spdx_licensing()


def _satisfiable(node: Any, ok: Any) -> bool:
    """Whether a parsed SPDX expression can be met with licenses `ok` accepts (OR: one side)."""
    operator = type(node).__name__
    if operator == "OR":
        return any(_satisfiable(arg, ok) for arg in node.args)
    if operator == "AND":
        return all(_satisfiable(arg, ok) for arg in node.args)
    symbol = getattr(node, "license_symbol", node)  # 'X WITH exception' is judged as X
    return bool(ok(str(symbol.key)))


def license_verdict(expression: str, allow: frozenset[str], deny: frozenset[str]) -> bool:
    """Whether a package licensed `expression` (as the SBOM spells it) passes the lists."""

    def ok(name: str) -> bool:
        return name not in deny and (not allow or name in allow)

    if expression == "NOASSERTION":
        return ok("NOASSERTION")
    return _satisfiable(_licensing().parse(expression), ok)


def check_licenses(
    manifest: Manifest,
    platform: str,
    layers: Sequence[Layer],
    verdicts: MutableMapping[str, list[Any]] | None = None,
) -> Result:
    """`verdicts` (licence names joined by \\x1f -> [expression, passes]) remembers what this
    policy's lists said of each set of names: parsing SPDX expressions takes most of a no-op
    build's time otherwise. The caller keeps one per policy (licenses_key)."""
    policy = manifest.security.licenses
    allow, deny = frozenset(policy.allow), frozenset(policy.deny)
    components: list[Component] = [c for layer in layers for c in layer.inventory]
    offending = []
    verdicts = {} if verdicts is None else verdicts
    if allow or deny:
        for component in components:
            key = "\x1f".join(component.licenses)
            found = verdicts.get(key)
            if not (isinstance(found, list) and len(found) == 2):  # a damaged memo entry: judged again
                expression, _ = license_expression(component.licenses)
                found = verdicts[key] = [expression, license_verdict(expression, allow, deny)]
            expression, passes = found
            if not passes:
                kind = "Debian package" if component.kind == "deb" else "wheel"
                offending.append(f"the {kind} {component.name} {component.version} is licensed {expression}")
    lists = " and ".join(
        f"{key} [{', '.join(sorted(values))}]" for key, values in (("allow", allow), ("deny", deny)) if values
    )
    return Result(
        rule="licenses",
        platform=platform,
        checked=f"{len(components)} Debian packages and wheels" + (f" against {lists}" if lists else ""),
        found=f"{len(offending)} outside the policy"
        if offending
        else ("all within the policy" if lists else "no policy set"),
        offending=tuple(offending),
        hint="allow the license by name in security.licenses.allow (or drop it from deny), or remove "
        "the package from python.requirements / system.packages",
    )


def check_files(platform: str, layers: Sequence[Layer]) -> list[Result]:
    entries = sum(layer.facts.entries for layer in layers)
    setid = [f"/{path} (layer {layer.name})" for layer in layers for path in layer.facts.setid]
    programs = [f"/{path} (layer {layer.name})" for layer in layers for path in layer.facts.programs]
    return [
        Result(
            rule="no-setuid",
            platform=platform,
            checked=f"{entries} files and folders",
            found=f"{len(setid)} setuid or setgid files"
            if setid
            else "no setuid or setgid file; no folder writable by others but /tmp",
            offending=tuple(setid),
            hint="remove the package that brings it from system.packages: the image runs with "
            "no-new-privileges, where setuid cannot work",
        ),
        Result(
            rule="no-shell",
            platform=platform,
            checked=f"{entries} files and folders",
            found=f"{len(programs)} shells or package managers"
            if programs
            else "no shell, no package manager",
            offending=tuple(programs),
            hint="remove the requirement or package that installs it "
            "(pip, for instance, is not needed at run time)",
        ),
    ]


def check_size(manifest: Manifest, platform: str, layers: Sequence[Layer]) -> Result:
    size = sum(layer.blob.uncompressed_size for layer in layers)
    limit_text = manifest.security.max_image_size
    limit = parse_size(limit_text) if limit_text else None
    too_big = limit is not None and size > limit
    return Result(
        rule="max-image-size",
        platform=platform,
        checked="the image's uncompressed size" + (f" against {limit_text}" if limit_text else ""),
        found=f"{size / 1e6:.1f} MB" + ("" if limit_text else " (no limit set)"),
        offending=(f"{size / 1e6:.1f} MB is over {limit_text}",) if too_big else (),
        hint="raise security.max_image_size, or make the image smaller (fewer packages or model files)",
    )


def licenses_key(manifest: Manifest | None) -> str:
    """What a memo of licence answers is valid for: the SPDX data and the policy's lists (None:
    answers that depend on no policy, as spdx_id's)."""
    lists = (
        []
        if manifest is None
        else [sorted(manifest.security.licenses.allow), sorted(manifest.security.licenses.deny)]
    )
    data = [lists, _spdx_version(), _VERDICT_FORMAT]
    return digest_of(canonical(data)).removeprefix("sha256:")[:32]


_VERDICT_FORMAT = 1  # bump when license_verdict or license_expression would judge otherwise


@cache
def _spdx_version() -> str:
    from importlib.metadata import version  # noqa: PLC0415 - 3 ms a call: once a process

    return version("license-expression")


def check_image(
    manifest: Manifest,
    platform: str,
    layers: Sequence[Layer],
    verdicts: MutableMapping[str, list[Any]] | None = None,
) -> list[Result]:
    """The rules about one platform image, from its layers."""
    return [
        check_licenses(manifest, platform, layers, verdicts),
        *check_files(platform, layers),
        check_size(manifest, platform, layers),
    ]


def container_security(uid: int) -> dict[str, Any]:
    """The container securityContext of the policy: Kubernetes' spelling of what `omi-build
    run` applies to its local container too (engine.harden)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


TMP_SIZE = "64Mi"  # the one writable path, in memory


def pod_security(manifest: Manifest, target: str) -> dict[str, Any]:
    """The Kubernetes settings that carry the same policy into a deployment: the pod's and the
    container's securityContext, and the container's resources (a GPU for a CUDA target)."""
    return pod_security_for(manifest.security.user, manifest.target(target).accelerator)


def pod_security_for(uid: int, accelerator: str) -> dict[str, Any]:
    """pod_security for an image's user and accelerator (what deploy reads from a built image)."""
    resources: dict[str, Any] = {}
    if accelerator == "cuda":
        resources = {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}
    return {
        "pod": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "container": container_security(uid),
        "resources": resources,
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": TMP_SIZE}}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - the one writable path
    }


__all__ = [
    "TMP_SIZE", "Result", "check_files", "check_image", "check_licenses", "check_model", "check_secrets",
    "check_size", "container_security", "enforce", "license_verdict", "licenses_key", "parse_size",
    "pod_security", "pod_security_for",
]  # fmt: skip
