"""engine: how `omi-build run` starts an image (the parts that need no container tools)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from omi_build import engine
from omi_build.engine import REFUSED_SYSCALLS, harden
from omi_build.errors import ToolError
from omi_build.platforms import host_machine


def test_runc_config_is_locked_down() -> None:
    umoci: dict[str, Any] = {
        "process": {
            "env": ["PATH=/usr/bin", "PSC_MODEL_PORT=1"],
            "capabilities": {"bounding": ["CAP_KILL"], "ambient": ["CAP_NET_BIND_SERVICE"]},
        },
        "root": {"path": "rootfs"},
        "mounts": [],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
    }
    config = harden(umoci, port=45000)
    assert umoci["process"]["capabilities"]["bounding"] == ["CAP_KILL"]  # the input is kept
    process = config["process"]
    assert all(caps == [] for caps in process["capabilities"].values())
    assert set(process["capabilities"]) == {"bounding", "effective", "inheritable", "permitted", "ambient"}
    assert process["noNewPrivileges"] is True
    assert process["env"] == ["PATH=/usr/bin", "PSC_MODEL_PORT=45000", "OMI_LISTEN_HOST=127.0.0.1"]
    assert config["root"]["readonly"] is True
    seccomp = config["linux"]["seccomp"]
    assert seccomp["syscalls"][0]["action"] == "SCMP_ACT_ERRNO"
    assert {"ptrace", "mount", "unshare", "setns", "bpf", "keyctl"} <= set(REFUSED_SYSCALLS)
    assert config["mounts"][0]["destination"] == "/tmp"  # noqa: S108 - the container's own


def test_the_hosts_own_platform_needs_no_emulator_and_another_names_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert engine.emulator(host_machine()) is None
    other = "arm64" if host_machine() != "arm64" else "amd64"
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(ToolError, match=r"needs qemu-(aarch64|x86_64)-static") as failure:
        engine.emulator(other)
    assert "qemu-user-static" in (failure.value.hint or "")
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    found = engine.emulator(other)
    assert found is not None
    assert found.name.startswith("qemu-")
