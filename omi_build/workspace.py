"""Bazel-style addressing: a workspace of packages (directories with omi.yaml) and their targets.

The workspace root is the nearest directory upwards holding `omi.workspace`, else the git
root, else the starting directory. Labels:

    //models/iris:cpu    one target            //models/iris    every target of a package
    //models/...         every package below   //...            every package
    :cpu                 a target of the package in the current directory
    models/iris:cpu      relative to the current directory
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from omi_build.errors import WorkspaceError
from omi_build.manifest import MANIFEST_NAME, Manifest, load, load_cached, manifest_file

WORKSPACE_MARKER = "omi.workspace"
_SKIPPED_DIRS = frozenset({"node_modules", "__pycache__", "venv", "build", "dist"})


def find_root(start: Path) -> Path:
    """The workspace root for `start` (a directory)."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_MARKER).is_file():
            return directory
    for directory in (start, *start.parents):
        if (directory / ".git").exists():
            return directory
    return start


@dataclass(frozen=True, kw_only=True, slots=True)
class Package:
    """A directory with an omi.yaml, named relative to the workspace root."""

    root: Path
    name: str  # "" for the root itself

    @property
    def directory(self) -> Path:
        return self.root / self.name if self.name else self.root

    def label(self, target: str | None = None) -> str:
        return f"//{self.name}" + (f":{target}" if target else "")


@dataclass(frozen=True, kw_only=True, slots=True)
class Selection:
    """A package, its loaded manifest and the targets a label picked from it."""

    package: Package
    manifest: Manifest
    targets: tuple[str, ...]

    def labels(self) -> list[str]:
        return [self.package.label(target) for target in self.targets]


def _packages_under(root: Path, directory: Path) -> Iterator[Package]:
    for current, dirs, files in os.walk(directory):
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in _SKIPPED_DIRS
            and not (Path(current, d) / WORKSPACE_MARKER).exists()
        )
        if MANIFEST_NAME in files:
            rel = Path(current).relative_to(root).as_posix()
            yield Package(root=root, name="" if rel == "." else rel)


def _package_name(root: Path, directory: Path) -> str:
    try:
        rel = directory.resolve().relative_to(root).as_posix()
    except ValueError as exc:
        msg = f"{directory} is outside the workspace {root}"
        raise WorkspaceError(msg) from exc
    return "" if rel == "." else rel


def is_label(text: str) -> bool:
    return text.startswith(("//", ":")) or ":" in text or text.endswith("...")


def _split(text: str, root: Path, cwd: Path) -> tuple[str, str | None]:
    """A label's package path (relative to root, may end in '...') and target."""
    body, _, target = text.partition(":")
    if body.startswith("//"):
        package = body[2:].strip("/")
    else:
        base = _package_name(root, cwd)
        joined = f"{base}/{body}" if base and body else (body or base)
        package = os.path.normpath(joined).replace(os.sep, "/") if joined else ""
        if package == ".":
            package = ""
        if package == ".." or package.startswith("../"):  # '...' (every package) is not '..'
            msg = f"label '{text}' points outside the workspace {root}"
            raise WorkspaceError(msg)
    return package, (target or None)


def _select(package: Package, target: str | None, label: str, cache: Path | None) -> Selection:
    manifest = load(package.directory) if cache is None else load_cached(package.directory, cache)
    names = tuple(t.name for t in manifest.targets)
    if target is None:
        return Selection(package=package, manifest=manifest, targets=names)
    if target not in names:
        msg = f"{label}: package {package.label()} has no target '{target}'"
        raise WorkspaceError(msg, hint=f"its targets are: {', '.join(names)}")
    return Selection(package=package, manifest=manifest, targets=(target,))


def _wanted(arguments: Iterable[str], cwd: Path) -> list[str]:
    wanted = list(arguments)
    if not wanted:
        wanted = ["."] if (cwd / MANIFEST_NAME).is_file() else ["..."]
    return wanted


def packages(arguments: Iterable[str], cwd: Path | None = None) -> list[Package]:
    """The packages that paths and labels name, in order, without loading them."""
    cwd = (cwd or Path.cwd()).resolve()
    root = find_root(cwd)
    found: dict[Path, Package] = {}
    for argument in _wanted(arguments, cwd):
        for package, _target in _resolve_one(argument, root, cwd):
            found.setdefault(package.directory, package)
    return list(found.values())


def resolve(
    arguments: Iterable[str], cwd: Path | None = None, *, cache: Path | None = None
) -> list[Selection]:
    """Resolve paths and labels to loaded selections, in order, without repeats.

    With no arguments: the package in `cwd`, or else every package below it. With `cache` (a folder),
    valid manifests are remembered there (see manifest.load_cached).
    """
    cwd = (cwd or Path.cwd()).resolve()
    root = find_root(cwd)
    selected: dict[Path, Selection] = {}
    for argument in _wanted(arguments, cwd):
        for package, target in _resolve_one(argument, root, cwd):
            selection = _select(package, target, argument, cache)
            earlier = selected.get(package.directory)
            if earlier is not None:
                merged = tuple(dict.fromkeys((*earlier.targets, *selection.targets)))
                selection = Selection(package=package, manifest=selection.manifest, targets=merged)
            selected[package.directory] = selection
    return list(selected.values())


def _resolve_one(argument: str, root: Path, cwd: Path) -> list[tuple[Package, str | None]]:
    if not is_label(argument):
        path = Path(argument)
        path = path if path.is_absolute() else cwd / path
        file = manifest_file(path)
        package_root = find_root(file.parent)
        return [(Package(root=package_root, name=_package_name(package_root, file.parent)), None)]
    package_path, target = _split(argument, root, cwd)
    if package_path == "..." or package_path.endswith("/..."):
        if target is not None:
            msg = f"label '{argument}': '...' selects packages, so it takes no ':{target}'"
            raise WorkspaceError(msg)
        below = package_path[: -len("...")].rstrip("/")
        directory = root / below if below else root
        found = list(_packages_under(root, directory)) if directory.is_dir() else []
        if not found:
            msg = f"label '{argument}' matches no package (no {MANIFEST_NAME} below {directory})"
            raise WorkspaceError(msg, hint="run 'omi-build init DIR' to create one")
        return [(package, None) for package in found]
    package = Package(root=root, name=package_path)
    if not (package.directory / MANIFEST_NAME).is_file():
        msg = f"label '{argument}': no package {package.label()} (no {MANIFEST_NAME} in {package.directory})"
        raise WorkspaceError(msg, hint="'omi-build query //...' lists every target")
    return [(package, target)]
