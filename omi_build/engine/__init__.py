"""Running a built image locally with the best runtime present, and waiting until it serves.

Docker or Podman are used where their engine answers; otherwise (as on build machines without
a daemon) the image is unpacked with umoci and run with runc, as root: read-only root file
system, a tmpfs /tmp, the image's user with no capabilities, no_new_privs, a seccomp filter
that refuses what Docker's default profile refuses, and the host's network with the server
bound to 127.0.0.1 only (OMI_LISTEN_HOST), so only this machine reaches it.

Another platform's image (arm64 on an amd64 host, say) runs with runc under qemu-user: the
static emulator (Debian's qemu-user-static) is copied into the unpacked bundle, never into the
image, and runs the entrypoint; no binfmt_misc registration is needed.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from omi_build import policy
from omi_build.errors import RunError, ToolError
from omi_build.image import Layout
from omi_build.layers import CONFIG_PATH
from omi_build.platforms import arch_of, host_machine

# Debian's qemu-user-static names its emulators by the machine they emulate.
_QEMU = {"amd64": "qemu-x86_64-static", "arm64": "qemu-aarch64-static"}
EMULATOR_PATH = "/.omi-emulator"  # where the bundle (not the image) holds it


def _engine() -> str | None:
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        try:
            probe = subprocess.run([engine, "info"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return engine
    return None


def _require(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        msg = f"{tool} is not installed, and no working docker or podman engine was found"
        raise ToolError(msg, hint=f"apt-get install {package}")
    return found


def serving_config(layout: Path) -> dict[str, Any]:
    """The serving config of this machine's image in a layout, read from its layers."""
    opened = Layout.open(layout)
    data = opened.file(opened.image(host_machine()), CONFIG_PATH)
    if data is None:
        msg = f"no {CONFIG_PATH} in the image of {layout}"
        raise RunError(msg, hint="was it built by omi-build?")
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def _resolve_ref(layout: Path, arch: str) -> str:
    """The ref name of the image for `arch`, as umoci, skopeo and podman take it."""
    opened = Layout.open(layout)
    return opened.ref_of(opened.image(arch))


@dataclass
class Running:
    """An image serving on 127.0.0.1:port; stop() drains it."""

    port: int
    process: subprocess.Popen[bytes]
    runtime: str
    name: str
    cleanup: list[Path] = field(default_factory=list)
    emulated: bool = False  # under qemu-user: slower to start

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for the drain, clean up; return the server's exit code."""
        if self.process.poll() is None:
            if self.runtime == "runc":
                subprocess.run(["runc", "kill", self.name, "TERM"], capture_output=True, check=False)
            else:
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.runtime == "runc":
            subprocess.run(["runc", "delete", "--force", self.name], capture_output=True, check=False)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _load_into(engine: str, layout: Path, ref: str, name: str) -> str:
    """Hand the image to a container engine; return what `run` takes."""
    if engine == "podman":
        command = ["podman", "pull", "-q", f"oci:{layout}:{ref}"]
        image = None
    else:  # docker reads no OCI layouts; skopeo copies into its daemon
        image = f"omi-build-run:{name}"
        command = [
            _require("skopeo", "skopeo"),
            "copy",
            "-q",
            f"oci:{layout}:{ref}",
            f"docker-daemon:{image}",
        ]
    loaded = subprocess.run(command, capture_output=True, text=True, check=False)
    if loaded.returncode != 0:
        msg = f"{engine} could not load the image: {loaded.stderr.strip()}"
        raise RunError(msg)
    return image or loaded.stdout.strip().splitlines()[-1]


def load(
    layout: Path,
    *,
    arch: str,
    name: str,
    into: str = "auto",
    storage_driver: str | None = None,
    root: Path | None = None,
    runroot: Path | None = None,
) -> str:
    """Copy one platform's image into a docker engine (when `into` is docker, or auto and one
    answers) or into containers-storage, which podman, buildah and cri-o read; say where.
    skopeo does the copy: it writes both stores exactly as their own tools do."""
    ref = _resolve_ref(layout, arch)
    if into == "auto":
        into = "docker" if _engine() == "docker" else "containers-storage"
    if into == "docker":
        destination = f"docker-daemon:{name}"
    else:
        spec = ""
        if storage_driver or root or runroot:
            rootless = os.geteuid() != 0
            graph = root or (
                Path.home() / ".local/share/containers/storage"
                if rootless
                else Path("/var/lib/containers/storage")
            )
            run_dir = runroot or (
                Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / "containers"
                if rootless
                else Path("/run/containers/storage")
            )
            spec = f"[{storage_driver + '@' if storage_driver else ''}{graph}+{run_dir}]"
        destination = f"containers-storage:{spec}{name}"
    command = [_require("skopeo", "skopeo"), "copy", "-q", f"oci:{layout}:{ref}", destination]
    copied = subprocess.run(command, capture_output=True, text=True, check=False)
    if copied.returncode != 0:
        msg = f"skopeo could not load the image into {into}: {copied.stderr.strip()}"
        hint = (
            "is the docker daemon running and its socket readable?"
            if into == "docker"
            else "pass --storage-driver vfs where overlay does not work (nested containers, odd file systems)"
        )
        raise ToolError(msg, hint=hint)
    return destination


def emulator(arch: str) -> Path | None:
    """The qemu-user emulator that runs `arch` binaries here, or None when the host runs them."""
    if arch == host_machine():
        return None
    name = _QEMU.get(arch)
    found = shutil.which(name) if name else None
    if found is None:
        msg = f"running a linux/{arch} image on this {host_machine()} machine needs {name or 'an emulator'}"
        raise ToolError(msg, hint="install Debian's qemu-user-static (make deps does)")
    return Path(found)


def runc_bundle(
    layout: Path,
    ref: str,
    work: Path,
    *,
    port: int,
    args: list[str] | None = None,
    emulate: Path | None = None,
    env: list[str] | None = None,
) -> Path:
    """An OCI runtime bundle of the image under `work`, locked down (`harden`), running its
    entrypoint or `args`, through the qemu-user emulator `emulate` when given. The integration
    tests run images through this too."""
    bundle = work / "bundle"
    subprocess.run(
        [_require("umoci", "umoci"), "unpack", "--image", f"{layout}:{ref}", str(bundle)],
        check=True,
        capture_output=True,
    )
    config_path = bundle / "config.json"
    config = harden(json.loads(config_path.read_text(encoding="utf-8")), port=port)
    if args is not None:
        config["process"]["args"] = args
    if env:
        names = tuple(e.split("=", 1)[0] + "=" for e in env)
        kept = [e for e in config["process"]["env"] if not e.startswith(names)]
        config["process"]["env"] = [*kept, *env]
    if emulate is not None:
        # Under an explicit emulator the image's Python cannot exec another Python (the host
        # kernel does not know aarch64 binaries), so it serves as one process.
        if not any(e.startswith("OMI_PROCESSES=") for e in env or []):
            config["process"]["env"] = [*config["process"]["env"], "OMI_PROCESSES=1"]
        target = bundle / "rootfs" / EMULATOR_PATH.lstrip("/")
        shutil.copyfile(emulate, target)
        target.chmod(0o755)
        config["process"]["args"] = [EMULATOR_PATH, *config["process"]["args"]]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return bundle


# What Docker's default seccomp profile refuses to an unprivileged container, refused here with
# EPERM: kernel modules, keyrings, mounts and namespaces, tracing other processes, the clock,
# reboot, BPF, userfaultfd and perf. A model server needs none of them.
REFUSED_SYSCALLS = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount",
    "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "reboot", "request_key", "setns", "settimeofday", "swapoff",
    "swapon", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vm86", "vm86old",
)  # fmt: skip
_EPERM = 1
# runc has no default profile of its own: this is RuntimeDefault's spelling here.
RUNTIME_DEFAULT_SECCOMP = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
    ],
    "syscalls": [{"names": list(REFUSED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": _EPERM}],
}


def harden(config: dict[str, Any], *, port: int) -> dict[str, Any]:
    """The runc config umoci wrote, locked down for serving (a new dict; `config` is kept) by
    the security policy's own container securityContext, the one a deployment gets."""
    config = copy.deepcopy(config)
    process = config["process"]
    process["terminal"] = False
    replaced = ("PSC_MODEL_PORT=", "OMI_LISTEN_HOST=")
    process["env"] = [e for e in process.get("env", []) if not e.startswith(replaced)]
    process["env"] += [f"PSC_MODEL_PORT={port}", "OMI_LISTEN_HOST=127.0.0.1"]
    apply_security_context(config, policy.container_security(int(process["user"]["uid"])))
    config["mounts"].append(
        {
            "destination": "/tmp",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": [
                "nosuid",
                "nodev",
                "noexec",
                "mode=1777",
                f"size={policy.TMP_SIZE.removesuffix('i')}",
            ],
        }
    )
    # The host's network, as `docker run --network host` would, with the server bound to
    # 127.0.0.1 (OMI_LISTEN_HOST above): reachable from this machine only.
    linux = config["linux"]
    linux["namespaces"] = [ns for ns in linux.get("namespaces", []) if ns.get("type") != "network"]
    return config


def apply_security_context(config: dict[str, Any], context: dict[str, Any]) -> None:
    """A Kubernetes container securityContext, as a runc config: each setting the policy
    makes (policy.container_security) has its runc spelling here; an image that would run as
    root is refused, as the kubelet refuses it under runAsNonRoot."""
    process = config["process"]
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    user["uid"] = int(context.get("runAsUser", user.get("uid", 0)))
    user["gid"] = int(context.get("runAsGroup", user.get("gid", 0)))
    if context.get("runAsNonRoot") and user["uid"] == 0:
        msg = "the image runs as root (uid 0), and the security policy runs containers as non-root only"
        raise RunError(msg, hint="build it with security.user set to a non-zero uid (65532 is the default)")
    if context.get("readOnlyRootFilesystem"):
        config["root"]["readonly"] = True
    if context.get("allowPrivilegeEscalation") is False:
        process["noNewPrivileges"] = True  # setuid binaries and file capabilities never raise it
    if "ALL" in (context.get("capabilities") or {}).get("drop", []):
        # umoci grants the OCI defaults; the image's user holds none at all
        process["capabilities"] = {
            kind: [] for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
    if (context.get("seccompProfile") or {}).get("type") == "RuntimeDefault":
        config["linux"]["seccomp"] = RUNTIME_DEFAULT_SECCOMP


def start(
    layout: Path,
    *,
    port: int,
    output: IO[bytes] | int | None = None,
    platform: str | None = None,
    env: Mapping[str, str] | None = None,
    args: list[str] | None = None,
) -> Running:
    """Start the image for `platform` (default: the host's) from an OCI layout, serving on
    127.0.0.1:port; another platform's image runs under qemu-user with runc. `env` adds
    variables (OMI_PROCESSES, say); `args` runs another command than the entrypoint."""
    extra_env = [f"{key}={value}" for key, value in (env or {}).items()]
    arch = arch_of(platform) if platform else host_machine()
    ref = _resolve_ref(layout, arch)
    emulate = emulator(arch)
    engine = _engine() if emulate is None else None
    name = f"omi-{uuid.uuid4().hex[:12]}"
    if engine is not None:
        image = _load_into(engine, layout, ref, name)
        command = [engine, "run", "--rm", "--name", name, "--read-only", "--tmpfs", "/tmp",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                   "--network", "host", "-e", f"PSC_MODEL_PORT={port}", "-e", "OMI_LISTEN_HOST=127.0.0.1",
                   *(f"--env={e}" for e in extra_env),
                   *(["--entrypoint", args[0]] if args else []),
                   image, *(args[1:] if args else [])]  # fmt: skip
        process = subprocess.Popen(command, stdout=output, stderr=output, stdin=subprocess.DEVNULL)
        return Running(port=port, process=process, runtime=engine, name=name)
    runtime = "runc" if emulate is None else f"runc + {emulate.name}"
    _require("runc", "runc")
    if os.geteuid() != 0:
        msg = "without docker or podman, omi-build runs images with runc, which needs root here"
        raise RunError(msg, hint="run as root, or install a working podman")
    work = Path(tempfile.mkdtemp(prefix="omi-run-"))
    try:
        bundle = runc_bundle(layout, ref, work, port=port, emulate=emulate, args=args, env=extra_env)
        process = subprocess.Popen(
            ["runc", "run", name], cwd=bundle, stdout=output, stderr=output, stdin=subprocess.DEVNULL
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(work, ignore_errors=True)
        msg = f"umoci could not unpack {layout}:{ref}: {exc.stderr.decode(errors='replace').strip()}"
        raise RunError(msg) from exc
    except BaseException:  # a signal while unpacking: leave no bundle behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Running(
        port=port, process=process, runtime=runtime, name=name, cleanup=[work], emulated=emulate is not None
    )  # the bundle lies inside work


def wait_serving(running: Running, timeout: float | None = None) -> float:
    """Seconds until grpc health says SERVING; RunError if the server exits or takes too long
    (default: 60 s, 300 s under an emulator)."""
    if timeout is None:
        timeout = 300 if running.emulated else 60
    import grpc  # noqa: PLC0415 - only running an image needs a gRPC client

    from omi_build.runtime.protocol import health_pb2, health_pb2_grpc  # noqa: PLC0415

    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - started < timeout:
            if running.process.poll() is not None:
                msg = f"the server exited with code {running.process.returncode} before serving"
                raise RunError(msg, hint="its log above says why")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    msg = f"the server did not report SERVING within {timeout:.0f} s"
    raise RunError(msg)
