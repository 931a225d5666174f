"""What start-up needs before gRPC and numpy are imported: the error it fails with, the
serving config as JSON, the check of the model files, the CPUs this container may use, and
the log line format. The supervisor of several server processes imports only this."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

_LOG_FIELD = 1000  # characters of one log field: a client's 1 MB name costs one short line
MAX_PROCESSES = 64
AUTO_WITHOUT_QUOTA = 8  # "auto" where the cgroup sets no CPU quota


class StartupError(Exception):
    """The model cannot be served; the message says why and what to fix."""


def short(text: object, limit: int = 64) -> str:
    """A client's string as a message may quote it: at most `limit` characters."""
    value = str(text)
    return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"


def log_event(stream: TextIO | None, event: str, *, level: str = "info", **fields: Any) -> None:
    """One JSON line: time, level, event, then the fields (long strings shortened)."""
    bounded = {
        key: short(value, _LOG_FIELD) if isinstance(value, str) else value for key, value in fields.items()
    }
    record = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "event": event,
        **bounded,
    }
    out = stream or sys.stderr
    out.write(json.dumps(record, default=str) + "\n")
    out.flush()


def read_raw(path: Path) -> dict[str, Any]:
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"cannot read the serving config {path}: {exc}"
        raise StartupError(msg) from exc
    return raw


def _sha256(path: Path) -> str:
    """Read in 1 MiB chunks: a 2 GB weights file costs a megabyte of memory, not 2 GB."""
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify_files(raw: dict[str, Any], directory: Path) -> None:
    """Refuse to serve model files that differ from the ones the image was built with.

    The server runs this beside the model's load (hashing releases the GIL), so start-up
    takes the longer of the two, not their sum; it reports SERVING only after both."""
    for relative, expected in raw["model"]["files"].items():
        path = directory / relative
        try:
            actual = "sha256:" + _sha256(path)
        except OSError as exc:
            msg = f"model file {relative} is missing: {exc}"
            raise StartupError(msg) from exc
        if actual != expected:
            msg = f"model file {relative} changed after the build ({actual}, built: {expected})"
            raise StartupError(msg)


def _cgroup_v2_limit(root: Path) -> float | None:
    """The tightest cpu.max quota on this process's cgroup v2 path, in CPUs."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return None
    limits = []
    folder = root / path.lstrip("/")
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return min(limits) if limits else None


def _cgroup_v1_limit(root: Path) -> float | None:
    for name in ("cpu,cpuacct", "cpu"):
        try:
            quota = int((root / name / "cpu.cfs_quota_us").read_text())
            period = int((root / name / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup's CPU quota in CPUs (v2, else v1); None where there is none."""
    quota = _cgroup_v2_limit(cgroup_root)
    return quota if quota is not None else _cgroup_v1_limit(cgroup_root)


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota
    (rounded up: 1.5 CPUs of quota keep two processes busy), not the host's count."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def process_count(raw: dict[str, Any], environ: dict[str, str] | None = None) -> int:
    """How many server processes: OMI_PROCESSES, else serving.concurrency.processes, where
    "auto" (the default) is the CPUs available (at most 8 without a CPU quota), or 1 on a GPU
    (each process would hold its own copy of the model in GPU memory, and the GPU serializes
    their calls anyway)."""
    env = os.environ if environ is None else environ
    setting: Any = env.get("OMI_PROCESSES") or raw["serving"].get("concurrency", {}).get("processes", 1)
    if setting == "auto":
        if (raw.get("device") or {}).get("accelerator") == "cuda":
            return 1
        count = available_cpus()
        if cpu_quota() is None:
            # No CPU limit (a Kubernetes pod without one sees the whole node): a bound, so a
            # 96-core node does not get 96 copies of the model.
            count = min(count, AUTO_WITHOUT_QUOTA)
        return min(count, MAX_PROCESSES)
    try:
        count = int(setting)
    except (TypeError, ValueError):
        msg = (
            f"processes={setting!r} is not a number or 'auto' (OMI_PROCESSES, serving.concurrency.processes)"
        )
        raise StartupError(msg) from None
    if not 1 <= count <= MAX_PROCESSES:
        msg = f"processes={count} is out of range: 1 to {MAX_PROCESSES}"
        raise StartupError(msg)
    return count


def resolve_port(raw: dict[str, Any], override: int | None) -> int:
    """--port, else PSC_MODEL_PORT (Modzy's variable), else serving.port."""
    if override is not None:
        return override
    from_env = os.environ.get("PSC_MODEL_PORT")
    if from_env:
        if not from_env.isdigit() or not 0 < int(from_env) < 65536:
            msg = f"PSC_MODEL_PORT={from_env!r} is not a port number"
            raise StartupError(msg)
        return int(from_env)
    return int(raw["serving"]["port"])


def process_age_s() -> float | None:
    """Seconds since this process started, from /proc (None where there is no /proc)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
