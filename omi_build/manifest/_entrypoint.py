"""The entrypoint check: the one check that reads a file's contents, not just its name.

Kept apart and light (ast and difflib only): after the model's code changes, a build reruns
it alone on a manifest whose text passed every other check before.
"""

from __future__ import annotations

import ast
from pathlib import Path as FsPath
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from omi_build.errors import PackageFileError

from . import files
from ._report import suggest

if TYPE_CHECKING:
    from ._yaml import Path


class Sink(Protocol):
    def add(self, path: Path, message: str, *, at_key: bool = False) -> None: ...


class _Count:
    """A sink that only counts: enough to learn whether the check passes."""

    def __init__(self) -> None:
        self.problems = 0

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:  # noqa: ARG002
        self.problems += 1


def relative_problem(text: str) -> str | None:
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("~"):
        return "must be relative to the directory of omi.yaml"
    if ".." in pure.parts:
        return "must stay inside the directory of omi.yaml (no '..')"
    return None


def check_entrypoint(model: dict[str, Any], base: FsPath, report: Sink) -> str | None:
    """The entrypoint file exists and defines the class, with a predict method (read with
    ast, never run); the file's name, for the files check."""
    entry = model.get("entrypoint")
    if not isinstance(entry, str) or ":" not in entry or not entry.split(":")[0].endswith(".py"):
        return None
    file_name, class_name = entry.rsplit(":", 1)
    path: Path = ("model", "entrypoint")
    problem = relative_problem(file_name)
    if problem:
        report.add(path, f"'{file_name}' {problem}")
        return None
    allow_links = model.get("allow_links") is True
    problem = files.problem_with(base, file_name, allow_links=allow_links)
    if problem == "does not exist":
        report.add(path, f"'{file_name}' does not exist next to omi.yaml; create it or fix the path")
        return None
    if problem:
        report.add(path, f"'{file_name}' {problem}")
        return None
    try:
        source = files.read_inside(base, file_name, allow_links=allow_links)
        tree = ast.parse(source, filename=file_name)
    except PackageFileError as exc:
        report.add(path, f"'{file_name}' {exc}")
        return None
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 0
        report.add(path, f"'{file_name}' is not valid Python (line {line}): {exc.args[0]}")
        return file_name
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found = classes.get(class_name)
    if found is None:
        did_you_mean = suggest(class_name, classes)
        report.add(path, f"'{file_name}' defines no class '{class_name}'{did_you_mean}")
        return file_name
    methods = {node.name for node in found.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
    if not found.bases and "predict" not in methods:
        report.add(
            path,
            f"class '{class_name}' has no predict method; add 'def predict(self, inputs)' "
            "that answers a batch",
        )
    return file_name


def still_passes(data: Any, base: FsPath) -> bool:
    """Whether the entrypoint check passes for the manifest `data` with the files now on disk."""
    model = data.get("model") if isinstance(data, dict) else None
    count = _Count()
    check_entrypoint(model if isinstance(model, dict) else {}, base, count)
    return count.problems == 0
