"""Turns problems at data paths into located, compiler-style issues."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from omi_build.errors import Issue

if TYPE_CHECKING:  # annotations only: PyYAML is not loaded for a cached manifest
    from ._yaml import Document, Path


def field_name(path: Iterable[str | int]) -> str:
    """`('model', 'inputs', 0, 'name')` -> `model.inputs[0].name`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def suggest(word: str, choices: Iterable[str]) -> str:
    """A "did you mean" suffix, or the empty string."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def describe(value: Any) -> str:
    """A value in the user's vocabulary."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"text ('{value}')"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Reporter:
    """Collects issues for one file, placing each at the line and column it concerns."""

    def __init__(self, file: str, doc: Document) -> None:
        self.file = file
        self.doc = doc
        self.issues: list[Issue] = []
        self._seen: set[tuple[int, int, str, str]] = set()

    def add(self, path: Path, message: str, *, at_key: bool = False) -> None:
        line, col = self.doc.position(path, key=at_key)
        field = field_name(path)
        if (line, col, field, message) in self._seen:
            return
        self._seen.add((line, col, field, message))
        self.issues.append(Issue(file=self.file, line=line, col=col, field=field, message=message))

    def add_at(self, line: int, col: int, path: Path, message: str) -> None:
        self.issues.append(Issue(file=self.file, line=line, col=col, field=field_name(path), message=message))
