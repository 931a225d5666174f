"""A workspace's packages build side by side: results in order, the first failure raised."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from omi_build import build
from omi_build.errors import BuildError

# Typed for the pipeline's (selection, target) pairs; any items do for the order it keeps.
side_by_side: Any = build._side_by_side


def test_packages_build_side_by_side_and_come_back_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "WORKSPACE_BUILDS", 4)
    running, most = [0], [0]
    lock = threading.Lock()

    def one(work: list[Any]) -> list[Any]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [f"built {name}" for name in work]

    packages = [[f"m{i}:cpu", f"m{i}:cuda"] for i in range(8)]
    expected = [f"built m{i}:{target}" for i in range(8) for target in ("cpu", "cuda")]
    assert side_by_side(one, packages) == expected
    assert 1 < most[0] <= 4


def test_a_failing_package_fails_the_build_and_starts_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "WORKSPACE_BUILDS", 2)
    started: list[str] = []

    def one(work: list[Any]) -> list[Any]:
        started.append(work[0])
        if work[0] == "m0":
            msg = "m0 is broken"
            raise BuildError(msg)
        time.sleep(0.2)
        return work

    with pytest.raises(BuildError, match="m0 is broken"):
        side_by_side(one, [[f"m{i}"] for i in range(10)])
    assert len(started) < 10
