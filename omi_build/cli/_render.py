"""Renderers: human text on stderr, GitHub Actions annotations, and JSON on stdout."""

from __future__ import annotations

import json
from typing import Any, TextIO

from omi_build import settings
from omi_build.errors import Issue, ManifestError, OmiError


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(issue: Issue) -> str:
    """One workflow command that GitHub shows on the file, line and column."""
    message = f"{issue.field}: {issue.message}" if issue.field else issue.message
    return (
        f"::error file={_escape_property(issue.file)},line={issue.line},col={issue.col},"
        f"title={_escape_property('omi.yaml')}::{_escape_data(message)}"
    )


def in_github_actions() -> bool:
    return settings.github_actions()


def issue_dict(issue: Issue) -> dict[str, Any]:
    return {
        "file": issue.file,
        "line": issue.line,
        "col": issue.col,
        "field": issue.field,
        "message": issue.message,
    }


def error(exc: OmiError, *, fmt: str, out: TextIO, err: TextIO) -> None:
    """Show an error the way the chosen format asks."""
    issues = exc.issues if isinstance(exc, ManifestError) else ()
    if fmt == "json":
        payload: dict[str, Any] = {
            "ok": False,
            "error": str(exc),
            "reference": exc.reference,
            "exit_code": exc.exit_code,
        }
        if issues:
            payload["issues"] = [issue_dict(issue) for issue in issues]
        if exc.hint:
            payload["hint"] = exc.hint
        out.write(json.dumps(payload, indent=2) + "\n")
    else:
        err.writelines(f"{issue}\n" for issue in issues)
        files = len({issue.file for issue in issues})
        summary = f"{exc} ({files} file{'s' if files != 1 else ''})" if issues else str(exc)
        err.write(f"error: {summary}\n")
        if exc.hint:
            err.write(f"hint: {exc.hint}\n")
    if in_github_actions():
        out.writelines(github_annotation(issue) + "\n" for issue in issues)
        if not issues:
            out.write(f"::error title=omi-build::{_escape_data(str(exc))}\n")
