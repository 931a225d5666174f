"""omi.yaml: YAML with positions -> JSON Schema -> semantic checks -> frozen Manifest.

>>> from omi_build.manifest import load
>>> load("examples/iris-sklearn").metadata.name
'iris-classifier'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omi_build import __version__, atomic
from omi_build.errors import Issue, ManifestError, WorkspaceError

from .types import Manifest, Target, Tensor, from_data

MANIFEST_NAME = "omi.yaml"
# Validation takes about 6 s per MB of YAML (PyYAML in Python); a manifest with a 50,000-row
# example is 1.7 MB, and 4 MB took 33 s and 750 MB before this cap.
MAX_MANIFEST_CHARS = 2 * 2**20

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "Target",
    "Tensor",
    "check_text",
    "load",
    "load_cached",
    "manifest_file",
]


def manifest_file(path: str | os.PathLike[str]) -> Path:
    """The omi.yaml that `path` names: the file itself, or the one in a directory."""
    candidate = Path(path)
    if candidate.is_dir() or candidate.suffix not in {".yaml", ".yml"}:
        directory, candidate = candidate, candidate / MANIFEST_NAME
    else:
        directory = candidate.parent
    if not candidate.is_file():
        where = "" if directory.is_dir() else f" ({directory} does not exist)"
        msg = f"no {MANIFEST_NAME} at {candidate}{where}"
        raise WorkspaceError(msg, hint=f"run 'omi-build init {directory}' to write one")
    return candidate


def _display_name(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def check_text(text: str, *, file: str, base: Path) -> tuple[list[Issue], object]:
    """Every problem in `text` (the contents of `file`), and the parsed data."""
    # Imported here: jsonschema and PyYAML cost 150 ms, which a cached load never pays.
    from . import _checks, _schema  # noqa: PLC0415
    from ._report import Reporter  # noqa: PLC0415
    from ._yaml import parse  # noqa: PLC0415

    if len(text) > MAX_MANIFEST_CHARS:
        size = f"{len(text.encode('utf-8', errors='replace')) / 2**20:.1f} MiB"
        message = (
            f"the manifest is {size}; the limit is {MAX_MANIFEST_CHARS // 2**20} MiB. "
            "Keep large examples small (a few rows show the model works) and data in model files"
        )
        return [Issue(file=file, line=1, col=1, field="", message=message)], None
    doc = parse(text)
    report = Reporter(file, doc)
    for problem in doc.problems:
        report.add_at(problem.line, problem.col, problem.path, problem.message)
    if doc.data is not None or not doc.problems:
        _schema.check(doc.data, report)
        _checks.check(doc.data, base, report)
    return sorted(report.issues), doc.data


_SKIPPED = frozenset({".git", "omi-out", "__pycache__", ".venv", "node_modules"})


def _listing(directory: Path) -> list[str]:
    """Every file below the package, by relative path: what the globs of model.files see."""
    names = []
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED)
        relative = Path(current).relative_to(directory)
        names += [(relative / name).as_posix() for name in sorted(files)]
    return names


def _stat(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _read_files(manifest: Manifest) -> list[Path]:
    """The files whose contents the checks read (the others only need to exist)."""
    files = [manifest.directory / manifest.model.module_file]
    if manifest.python.requirements_file:
        files.append(manifest.directory / manifest.python.requirements_file)
    if manifest.security.signing and manifest.security.signing.public_key:
        files.append(manifest.directory / manifest.security.signing.public_key)
    return files


def load_cached(path: str | os.PathLike[str], folder: Path) -> Manifest:
    """load(), remembering valid manifests in `folder`, so a build that changed nothing
    does not pay for YAML and JSON Schema again (150 ms).

    The key covers the text, this omi-build and the names of the package's files; the entry
    records the files whose contents the checks read, and is used whole only while they are
    unchanged. A changed model weight file therefore reuses the entry; after a changed model.py
    only the checks that read it run again (40 ms rather than 300).
    """
    file = manifest_file(path)
    raw = _read_capped(file)
    key = hashlib.sha256(f"{__version__}\0{file.resolve()}\0".encode() + raw)
    key.update("\0".join(_listing(file.parent)).encode("utf-8", "surrogateescape"))
    entry = folder / f"{key.hexdigest()}.json"
    try:
        cached: dict[str, Any] = json.loads(entry.read_text(encoding="utf-8"))
        if all(_stat(Path(name)) == stat for name, stat in cached["reads"].items()):
            return from_data(file.resolve(), cached["data"])
        # A file the checks read changed (model.py, most often): the text still passed the
        # schema, so rerun only what reads files; any problem gets the full, located report.
        from ._entrypoint import still_passes  # noqa: PLC0415

        if still_passes(cached["data"], file.parent):
            manifest, data = from_data(file.resolve(), cached["data"]), cached["data"]
        else:
            manifest, data = _load(file, raw)
    except (OSError, ValueError, KeyError, TypeError):
        manifest, data = _load(file, raw)
    reads = {str(read): _stat(read) for read in _read_files(manifest)}
    entry.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(entry, json.dumps({"data": data, "reads": reads}))
    return manifest


def load(path: str | os.PathLike[str]) -> Manifest:
    """Load and validate an omi.yaml (or the one in a directory); raise ManifestError."""
    file = manifest_file(path)
    return _load(file, _read_capped(file))[0]


def _read_capped(file: Path) -> bytes:
    """The manifest's bytes, read no further than the cap (a huge file is refused, not loaded)."""
    try:
        with file.open("rb") as stream:
            raw = stream.read(4 * MAX_MANIFEST_CHARS + 1)
    except OSError as exc:
        msg = f"cannot read {file}: {exc.strerror}"
        raise WorkspaceError(msg) from exc
    if len(raw) > 4 * MAX_MANIFEST_CHARS:
        message = f"the manifest is over {4 * MAX_MANIFEST_CHARS // 2**20} MiB; the limit is 2 MiB"
        raise ManifestError([Issue(file=_display_name(file), line=1, col=1, field="", message=message)])
    return raw


def _load(file: Path, raw: bytes) -> tuple[Manifest, dict[str, Any]]:
    name = _display_name(file)
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
    return from_data(file.resolve(), data), data
