"""Build cost against what changed (issue: build cost that grows with the change, not the model).

Each figure is a whole `omi-build build` process, start to exit, with a cache of its own whose
downloads are warm (one build of the iris example first):

  weights (OMI_BENCH_SCALE_MB, default "256,1024": random bytes added to the iris example),
  with build.compression auto (the default: a plain tar layer for them) and gzip (stored)
    build          the first build with the weights (their layer new)
    no-op          nothing changed (median of 5)
    one byte       one byte of the weights changed, at a new offset each time (median of 3)
    floor          in the same run, over the same file: sha256 (1 MiB reads) plus `zstd -1` on
                   every core (-T0), the issue's floor for a change; the ratio is one byte / floor
    image bytes    the weights' layer blob against the file's size
  workspace (OMI_BENCH_SCALE_MODELS, default "8,32" copies of the example, `build //...`)
    warm           every layer dropped from the cache (downloads kept), no output yet
    no-op          nothing changed (median of 3)
    one changed    one model's model.npz changed (median of 3), beside that model's own floor

The host platform only (--platform), so the figures are the builder's, not the emulator's.
omi_build's bytecode is compiled first, as an installed wheel has it (PYTHONDONTWRITEBYTECODE,
set on these machines, would have every run compile the builder's sources again). Each section
prints the share of CPU time the hypervisor took meanwhile: every figure moves with it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOOL = Path(sys.executable).with_name("omi-build")
sys.path.insert(0, str(REPO))

from omi_build.platforms import host_platform  # noqa: E402

PROBE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "if done.returncode: sys.exit(done.stderr)\n"
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _build(where: Path, cache: Path, *args: str) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of one build, run from `where`, in a child of its own."""
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    command = [str(TOOL), "build", *args, "--platform", str(host_platform())]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *command],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
    )
    if done.returncode != 0:
        sys.exit(f"build failed:\n{done.stderr}")
    seconds, rss_kb = done.stdout.split()
    return float(seconds), int(rss_kb) / 1024


def _median(runs: list[tuple[float, float]]) -> float:
    return statistics.median(seconds for seconds, _ in runs)


def _example(
    directory: Path, name: str = "iris-classifier", weights_mb: int = 0, compression: str = "gzip"
) -> Path:
    shutil.copytree(REPO / "examples/iris-sklearn", directory, ignore=shutil.ignore_patterns("omi-out"))
    manifest = directory / "omi.yaml"
    text = manifest.read_text().replace("name: iris-classifier", f"name: {name}")
    text = text.replace("compression: gzip", f"compression: {compression}")
    if weights_mb:
        with (directory / "weights.bin").open("wb") as out:
            for _ in range(weights_mb):
                out.write(os.urandom(1 << 20))
        text = text.replace("files: [model.py, model.npz]", "files: [model.py, model.npz, weights.bin]")
    manifest.write_text(text)
    return directory


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _floor(path: Path) -> tuple[float, float]:
    """Seconds of sha256 over the file, and of `zstd -1 -T0` over it (to /dev/null)."""
    import hashlib  # noqa: PLC0415

    start = time.perf_counter()
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    sha = time.perf_counter() - start
    zstd = shutil.which("zstd")
    if zstd is None:
        return sha, float("nan")
    start = time.perf_counter()
    subprocess.run([zstd, "-1", "-T0", "-q", "-c", str(path)], check=True, stdout=subprocess.DEVNULL)
    return sha, time.perf_counter() - start


def _layer_bytes(layout: Path, size: int) -> int:
    """The size of the layout's blob that holds the weights (the one blob near their size)."""
    sizes = [p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir()]
    return min((s for s in sizes if s >= size), default=0)


def weights(scratch: Path, cache: Path, megabytes: int, compression: str) -> None:
    example = _example(scratch / f"w{megabytes}-{compression}", weights_mb=megabytes, compression=compression)
    out = scratch / f"out-w{megabytes}-{compression}"
    built, rss = _build(scratch, cache, str(example), "--output", str(out))
    noop = [_build(scratch, cache, str(example), "--output", str(out)) for _ in range(5)]
    changed = []
    for attempt in range(3):
        _flip(example / "weights.bin", (attempt + 1) * 7919 * 1024)
        changed.append(_build(scratch, cache, str(example), "--output", str(out)))
    sha, zstd = _floor(example / "weights.bin")
    size = (example / "weights.bin").stat().st_size
    layer = _layer_bytes(out, size)
    blobs = sum(p.stat().st_size for p in (out / "blobs" / "sha256").iterdir())
    print(f"{megabytes} MB of random weights, build.compression {compression}:")
    print(f"  build {built:.2f} s (peak RSS {rss:.0f} MB); no-op {_median(noop):.2f} s "
          f"(peak RSS {max(r for _, r in noop):.0f} MB)")  # fmt: skip
    print(f"  one byte changed {_median(changed):.2f} s (runs {', '.join(f'{s:.2f}' for s, _ in changed)}; "
          f"peak RSS {max(r for _, r in changed):.0f} MB)")  # fmt: skip
    print(f"  floor: sha256 {sha:.2f} s + zstd -1 -T0 {zstd:.2f} s = {sha + zstd:.2f} s; "
          f"one byte / floor = {_median(changed) / (sha + zstd):.2f} (target <= 1.5)")  # fmt: skip
    print(f"  image bytes for the weights: {layer / size:.4f} of the file (target <= 1.01); "
          f"layout after 3 rebuilds {blobs / 1e6:.0f} MB")  # fmt: skip


def workspace(scratch: Path, cache: Path, models: int) -> None:
    root = scratch / f"ws{models}"
    root.mkdir()
    (root / "omi.workspace").touch()
    for index in range(models):
        _example(root / f"m{index:02}", name=f"iris-{index}")
    _build(root, cache, "//...")  # each model's lock, once
    shutil.rmtree(cache / "layers")
    shutil.rmtree(root / "omi-out")  # else every target is up to date: its output is intact
    warm = _build(root, cache, "//...")
    noop = [_build(root, cache, "//...") for _ in range(3)]
    changed = []
    target = root / "m00" / "model.npz"
    for attempt in range(3):
        data = bytearray(target.read_bytes())
        data[-1 - attempt] ^= 0xFF  # the zip's comment area at its end: still a valid npz
        target.write_bytes(bytes(data))
        changed.append(_build(root, cache, "//..."))
    sha, zstd = _floor(target)
    print(f"workspace of {models} models (//...):")
    print(f"  warm build {warm[0]:.2f} s; no-op {_median(noop):.2f} s; one model changed "
          f"{_median(changed):.2f} s (its floor {sha + zstd:.3f} s; targets for 8: no-op <= 0.5 s, "
          f"one changed <= 0.5 s + floor)")  # fmt: skip


def _steal() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def _taken(before: tuple[int, int]) -> str:
    steal, total = (after - first for after, first in zip(_steal(), before, strict=True))
    return f"  (the hypervisor took {100 * steal / max(total, 1):.0f}% of the CPU meanwhile)"


def main() -> int:
    sizes = [int(x) for x in os.environ.get("OMI_BENCH_SCALE_MB", "256,1024").split(",") if x]
    counts = [int(x) for x in os.environ.get("OMI_BENCH_SCALE_MODELS", "8,32").split(",") if x]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "omi_build")], check=True)
    with tempfile.TemporaryDirectory(prefix="omi-bench-scale-") as name:
        scratch = Path(name)
        cache = Path(os.environ.get("OMI_BENCH_CACHE", scratch / "cache"))
        _build(scratch, cache, str(_example(scratch / "warm")), "--output", str(scratch / "out-warm"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import omi_build.build, omi_build.cli"], check=True)
        print(f"(starting Python and importing omi-build's build path: {time.perf_counter() - start:.2f} s, "
              "part of every figure)")  # fmt: skip
        for megabytes in sizes:
            for compression in ("auto", "gzip"):
                before = _steal()
                weights(scratch, cache, megabytes, compression)
                print(_taken(before))
                shutil.rmtree(scratch / f"w{megabytes}-{compression}")  # the disk back
                shutil.rmtree(scratch / f"out-w{megabytes}-{compression}")
        for models in counts:
            before = _steal()
            workspace(scratch, cache, models)
            print(_taken(before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
