"""engine: how `omi-build run` starts an image (the parts that need no container tools)."""

from __future__ import annotations

from typing import Any

from omi_build.engine import REFUSED_SYSCALLS, harden


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
