"""Where an image came from, as in-toto statements the sign stage signs: SLSA provenance v1
(every resolved input with its sha256, and the build's parameters) and the OpenSSF
model-signing statement over the model files (so `model_signing verify` checks the weights
outside the image too). Byte-reproducible: no clocks, no host names, no paths of this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omi_build import __version__
from omi_build.digests import canonical

SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
MODEL_SIGNING = "https://model_signing/signature/v1.0"
STATEMENT_TYPE = "application/vnd.in-toto+json"  # an unsigned statement attached to the image
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
BUILD_TYPE = "urn:omi-build:build-type:oci-image:v1"
BUILDER_ID = "urn:omi-build:builder"
MODEL_SIGNATURE_FILE = "model.sig"


@dataclass(frozen=True, kw_only=True, slots=True)
class Input:
    """One resolved input: a file name or archive path, its purl if it has one, and its sha256."""

    name: str
    sha256: str
    uri: str = ""


def _statement(subjects: dict[str, str], predicate_type: str, predicate: dict[str, object]) -> bytes:
    return canonical(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [
                {"name": n, "digest": {"sha256": d.removeprefix("sha256:")}} for n, d in subjects.items()
            ],
            "predicateType": predicate_type,
            "predicate": predicate,
        }
    )


def slsa(
    *,
    subject: tuple[str, str],
    label: str,
    target: str,
    platform: str,
    platforms: Iterable[str],
    epoch: int,
    manifest_sha256: str,
    lock_sha256: str,
    inputs: Iterable[Input],
) -> bytes:
    """SLSA provenance v1 for one platform image (subject: its name and manifest digest)."""
    dependencies = [
        {"name": "omi.yaml", "digest": {"sha256": manifest_sha256}},
        {"name": "omi.lock", "digest": {"sha256": lock_sha256}},
        *(
            {"name": i.name, **({"uri": i.uri} if i.uri else {}), "digest": {"sha256": i.sha256}}
            for i in sorted(inputs, key=lambda i: i.name)
        ),
    ]
    predicate: dict[str, object] = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "package": label,
                "target": target,
                "platform": platform,
                "platforms": sorted(platforms),
                "sourceDateEpoch": epoch,
            },
            "internalParameters": {"omiBuildVersion": __version__},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {"builder": {"id": BUILDER_ID, "version": {"omi-build": __version__}}},
    }
    name, digest = subject
    return _statement({name: digest}, SLSA_PROVENANCE, predicate)


def _ignored(directory: Path, model_files: Iterable[str]) -> list[str]:
    """The paths under `directory` that are not model files, as few as possible (a folder with
    no model file in it is one entry), for `model_signing verify` to skip."""
    wanted = set(model_files)
    holders = {str(Path(*Path(f).parts[:depth])) for f in wanted for depth in range(1, len(Path(f).parts))}
    ignored, pending = [MODEL_SIGNATURE_FILE], [Path()]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted((directory / folder).iterdir())
        except OSError:
            continue
        for entry in entries:
            relative = str(folder / entry.name)
            if relative in wanted or relative == MODEL_SIGNATURE_FILE:
                continue
            if relative in holders and entry.is_dir() and not entry.is_symlink():
                pending.append(folder / entry.name)
            else:
                ignored.append(relative)
    return sorted(set(ignored))


def model_signing(directory: Path, model_files: dict[str, str]) -> bytes:
    """The model-signing v1.0 statement over the model files (relative path -> sha256 hex): the
    subject's digest is the sha256 of the files' digests in path order, as the format says."""
    resources = [
        {"algorithm": "sha256", "digest": sha256, "name": path}
        for path, sha256 in sorted(model_files.items())
    ]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    predicate: dict[str, object] = {
        "resources": resources,
        "serialization": {
            "method": "files",
            "hash_type": "sha256",
            "allow_symlinks": False,
            "ignore_paths": _ignored(directory, model_files),
        },
    }
    return _statement({directory.resolve().name: root}, MODEL_SIGNING, predicate)
