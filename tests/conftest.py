"""Unit tests stay offline and spawn nothing; integration tests are marked and run in CI."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True)
def _offline_unless_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("integration") is None:

        def refuse(*_args: Any, **_kwargs: Any) -> Any:
            msg = "unit tests must not open sockets or start processes; mark the test integration"
            raise AssertionError(msg)

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
