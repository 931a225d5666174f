"""How many server processes: the CPUs a container may use, from its cgroup, not the host."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from omi_build.runtime import _startup
from omi_build.runtime._startup import StartupError, available_cpus, process_count


def _cgroup_v2(root: Path, monkeypatch: pytest.MonkeyPatch, limits: dict[str, str]) -> None:
    """A fake cgroup v2 tree: this process in /pod/app, cpu.max per folder."""
    real_read = Path.read_text

    def read_text(self: Path, *args: object, **kwargs: object) -> str:
        if str(self) == "/proc/self/cgroup":
            return "0::/pod/app\n"
        return real_read(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", read_text)
    for folder, value in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(value)


def test_the_cgroup_quota_caps_the_cpus_and_rounds_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    _cgroup_v2(tmp_path, monkeypatch, {"pod/app": "150000 100000"})
    assert available_cpus(tmp_path) == 2


def test_a_parent_cgroups_quota_counts_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    _cgroup_v2(tmp_path, monkeypatch, {"pod/app": "max 100000", "pod": "300000 100000"})
    assert available_cpus(tmp_path) == 3


def test_no_quota_means_the_cpu_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 3, 5})
    _cgroup_v2(tmp_path, monkeypatch, {"pod/app": "max 100000"})
    assert available_cpus(tmp_path) == 3


def test_cgroup_v1_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)))
    monkeypatch.setattr(_startup, "_cgroup_v2_limit", lambda _root: None)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def _raw(processes: object, accelerator: str = "cpu") -> dict[str, object]:
    return {"serving": {"concurrency": {"processes": processes}}, "device": {"accelerator": accelerator}}


def test_process_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_startup, "available_cpus", lambda: 6)
    monkeypatch.setattr(_startup, "cpu_quota", lambda: 5.5)
    assert process_count(_raw("auto"), {}) == 6
    assert process_count(_raw("auto", "cuda"), {}) == 1  # one copy of the model per GPU
    assert process_count(_raw(3), {}) == 3
    assert process_count(_raw("auto"), {"OMI_PROCESSES": "2"}) == 2
    assert process_count({"serving": {"concurrency": {}}}, {}) == 1  # a config from before


@pytest.mark.parametrize("value", ["many", "0", "65", "-1"])
def test_a_bad_process_count_is_a_clear_error(value: str) -> None:
    with pytest.raises(StartupError, match="processes"):
        process_count(_raw("auto"), {"OMI_PROCESSES": value})


def test_auto_without_a_cpu_quota_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_startup, "available_cpus", lambda: 96)  # a whole node, no limit
    monkeypatch.setattr(_startup, "cpu_quota", lambda: None)
    assert process_count(_raw("auto"), {}) == 8
    assert process_count(_raw(12), {}) == 12  # asked for: as asked
