"""engine: how `omi-build run` starts an image (the parts that need no container tools)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from omi_build import engine, policy
from omi_build.engine import REFUSED_SYSCALLS, harden
from omi_build.errors import RunError, ToolError
from omi_build.platforms import host_machine


def test_runc_config_is_locked_down() -> None:
    umoci: dict[str, Any] = {
        "process": {
            "env": ["PATH=/usr/bin", "PSC_MODEL_PORT=1"],
            "user": {"uid": 65532, "gid": 65532},
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
    assert "size=64M" in config["mounts"][0]["options"]  # the deployment's emptyDir limit
    assert process["user"] == {"uid": 65532, "gid": 65532}


def _umoci(uid: int) -> dict[str, Any]:
    return {
        "process": {"env": [], "user": {"uid": uid, "gid": uid}},
        "root": {"path": "rootfs"},
        "mounts": [],
        "linux": {"namespaces": []},
    }


def test_run_applies_the_deployments_security_context_and_refuses_root() -> None:
    context = policy.container_security(1000)
    config = _umoci(1000)
    engine.apply_security_context(config, context)
    assert config["process"]["user"] == {"uid": 1000, "gid": 1000}
    assert config["root"]["readonly"] is True
    assert config["process"]["noNewPrivileges"] is True
    assert config["linux"]["seccomp"] is engine.RUNTIME_DEFAULT_SECCOMP
    # what a securityContext leaves out, the runc config leaves as umoci wrote it
    loose = _umoci(1000)
    engine.apply_security_context(loose, {"runAsUser": 1000})
    assert "noNewPrivileges" not in loose["process"]
    assert "readonly" not in loose["root"]
    assert "seccomp" not in loose["linux"]
    with pytest.raises(RunError, match="runs as root"):
        harden(_umoci(0), port=45000)


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
