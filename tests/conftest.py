"""Unit tests stay offline and spawn nothing; integration tests are marked and run in CI."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CORPUS = REPO / "tests" / "manifests"
SHARED_MODEL = CORPUS / "model.py"  # the entrypoint of every corpus case that brings none


def corpus_package(case: Path, into: Path) -> Path:
    """A manifest corpus case as a package under `into`: its own files, plus the corpus's one
    model.py unless it has its own."""
    package = into / case.name
    shutil.copytree(case, package, ignore=shutil.ignore_patterns("expected.txt"))
    if not (package / "model.py").exists():
        shutil.copy(SHARED_MODEL, package / "model.py")
    return package


@pytest.fixture(autouse=True)
def _offline_unless_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("integration") is None:

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            msg = "unit tests must not open sockets or start processes; mark the test integration"
            raise AssertionError(msg)

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
