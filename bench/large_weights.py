"""Build memory and start-up time with a large weights file (issue: harden the builder).

The iris example plus `weights.bin` of random bytes (OMI_BENCH_WEIGHTS_MB, default 2048),
built for this machine's platform with a warm download cache, then started with runc:
  build            wall time and peak RSS of the whole `omi-build build` process
  no-op build      the same build again, nothing changed
  to SERVING       from `runc run` to gRPC health SERVING (the server re-hashes every model
                   file at start-up, beside the model's load)
  server peak RSS  VmHWM of the server process in the container

Needs root, umoci and runc (make deps). Prints one line per figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = Path(sys.executable).with_name("omi-build")
sys.path.insert(0, str(REPO))

from omi_build import engine  # noqa: E402
from omi_build.platforms import host_platform  # noqa: E402


def _build(example: Path, cache: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one build, in a child of its own so its RSS is its own."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "built = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "if built.returncode: sys.exit(built.stderr)\n"
        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    command = [str(TOOL), "build", str(example), "--output", str(out), "--platform", str(host_platform())]
    done = subprocess.run(
        [sys.executable, "-c", probe, *command], check=False, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        sys.exit(f"build failed:\n{done.stderr}")
    seconds, rss_kb = done.stdout.split()
    return float(seconds), int(rss_kb) / 1024


def _weights(path: Path, megabytes: int) -> None:
    with path.open("wb") as out:
        for _ in range(megabytes):
            out.write(os.urandom(1 << 20))


def main() -> int:
    megabytes = int(os.environ.get("OMI_BENCH_WEIGHTS_MB", "2048"))
    cache = Path(os.environ.get("OMI_BENCH_CACHE", Path(tempfile.gettempdir()) / "omi-bench-cache"))
    with tempfile.TemporaryDirectory(prefix="omi-bench-weights-") as scratch:
        example = Path(scratch) / "iris"
        shutil.copytree(REPO / "examples/iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out"))
        out = Path(scratch) / "out"
        _build(example, cache, Path(scratch) / "warm")  # downloads and the iris layers, once
        _weights(example / "weights.bin", megabytes)
        manifest = example / "omi.yaml"
        manifest.write_text(
            manifest.read_text().replace(
                "files: [model.py, model.npz]", "files: [model.py, model.npz, weights.bin]"
            )
        )
        seconds, rss = _build(example, cache, out)
        print(f"build with {megabytes} MB of weights: {seconds:.1f} s, peak RSS {rss:.0f} MB")
        seconds, rss = _build(example, cache, out)
        print(f"no-op build: {seconds:.2f} s, peak RSS {rss:.0f} MB")
        if os.geteuid() != 0 or not shutil.which("runc"):
            print("start-up: skipped (needs root and runc)")
            return 0
        port = 47000 + os.getpid() % 1000
        log = Path(scratch) / "server.log"
        with log.open("wb") as sink:
            started = time.monotonic()
            running = engine.start(out, port=port, output=sink)
            unpacked = time.monotonic() - started
        try:
            engine.wait_serving(running, timeout=120)
            serving = time.monotonic() - started - unpacked
            state = json.loads(subprocess.run(["runc", "state", running.name], capture_output=True, text=True,
                                              check=True).stdout)  # fmt: skip
            status = Path(f"/proc/{state['pid']}/status").read_text()
            peak = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))
        finally:
            running.stop()
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        startup = next(e["startup_ms"] for e in events if e.get("event") == "serving")
        print(f"umoci unpack: {unpacked:.1f} s (not omi-build's: the runtime's own unpacking)")
        print(f"server start to SERVING: {startup / 1000:.2f} s (the process's age; hashes {megabytes} MB)")
        print(f"runc run to SERVING seen by a client: {serving:.2f} s")
        print(f"server peak RSS: {int(peak) / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
