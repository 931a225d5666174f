"""The public façade: each verb runs one or more pipeline stages. The CLI only renders.

>>> from omi_build import api
>>> [m.metadata.name for m in api.validate(["examples/iris-sklearn"])]
['iris-classifier']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from omi_build import scaffold, workspace
from omi_build.errors import Issue, ManifestError
from omi_build.manifest import Manifest, load


def validate(arguments: Iterable[str], cwd: Path | None = None) -> list[Manifest]:
    """Load every manifest that paths or labels name; raise one ManifestError with all issues."""
    manifests: list[Manifest] = []
    issues: list[Issue] = []
    for package in workspace.packages(arguments, cwd):
        try:
            manifests.append(load(package.directory))
        except ManifestError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ManifestError(issues)
    return manifests


def query(arguments: Iterable[str], cwd: Path | None = None) -> list[workspace.Selection]:
    """The targets that labels select (default: every target in the workspace)."""
    wanted = list(arguments) or ["//..."]
    return workspace.resolve(wanted, cwd)


def init(directory: Path, *, force: bool = False) -> list[Path]:
    """Write a starter omi.yaml (and model.py, if missing); return the files written."""
    return scaffold.write(directory, force=force)
