"""omi.yaml: YAML with positions -> JSON Schema -> semantic checks -> frozen Manifest.

>>> from omi_build.manifest import load
>>> load("examples/iris-sklearn").metadata.name
'iris-classifier'
"""

from __future__ import annotations

import os
from pathlib import Path

from omi_build.errors import Issue, ManifestError, WorkspaceError

from . import _checks, _schema
from ._report import Reporter
from ._yaml import parse
from .types import Manifest, Target, Tensor, from_data

MANIFEST_NAME = "omi.yaml"

__all__ = ["MANIFEST_NAME", "Manifest", "Target", "Tensor", "check_text", "load", "manifest_file"]


def manifest_file(path: str | os.PathLike[str]) -> Path:
    """The omi.yaml that `path` names: the file itself, or the one in a directory."""
    candidate = Path(path)
    if candidate.is_dir():
        candidate /= MANIFEST_NAME
    if not candidate.is_file():
        msg = f"no {MANIFEST_NAME} at {candidate}"
        raise WorkspaceError(msg, hint=f"run 'omi-build init {candidate.parent}' to write one")
    return candidate


def _display_name(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def check_text(text: str, *, file: str, base: Path) -> tuple[list[Issue], object]:
    """Every problem in `text` (the contents of `file`), and the parsed data."""
    doc = parse(text)
    report = Reporter(file, doc)
    for problem in doc.problems:
        report.add_at(problem.line, problem.col, problem.path, problem.message)
    if doc.data is not None or not doc.problems:
        _schema.check(doc.data, report)
        _checks.check(doc.data, base, report)
    return sorted(report.issues), doc.data


def load(path: str | os.PathLike[str]) -> Manifest:
    """Load and validate an omi.yaml (or the one in a directory); raise ManifestError."""
    file = manifest_file(path)
    name = _display_name(file)
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        issue = Issue(
            file=name,
            line=line,
            col=col,
            field="",
            message="not UTF-8 text; save the file as UTF-8",
        )
        raise ManifestError([issue]) from exc
    issues, data = check_text(text, file=name, base=file.parent)
    if issues:
        raise ManifestError(issues)
    assert isinstance(data, dict)  # noqa: S101 - the schema requires a mapping
    return from_data(file.resolve(), data)
