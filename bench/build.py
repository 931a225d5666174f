"""Build timings and image sizes for examples/iris-sklearn (issue: image builder).

Every figure is the whole `omi-build build` process, start to exit, on a copy of the example
with a cache of its own:
  cold           empty cache (downloads, layers, everything)
  warm download  the download cache (each archive and its unpacked form, the image's Python
                 for compiling) kept, no layer
  archives only  only the downloaded archives kept: every archive unpacked and compiled again
  model edit     after changing only model.npz
  code edit      after changing model.py (its layer is compiled again)
  no-op          nothing changed (median of 5)
"""

from __future__ import annotations

import compileall
import json
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


def _build(
    example: Path, cache: Path, out: Path, platform: str | None = None
) -> tuple[float, list[dict[str, object]]]:
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    only = ["--platform", platform] if platform else []
    start = time.perf_counter()
    done = subprocess.run(
        [str(TOOL), "--format", "json", "build", str(example), "--output", str(out), *only],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return time.perf_counter() - start, json.loads(done.stdout)


def _drop_layers(cache: Path, lock: dict[str, object], *, unpacked: bool) -> None:
    """Remove every built layer (and, unless `unpacked`, every unpacked archive) from the cache."""
    wanted = set()
    for platforms in lock["targets"].values():  # type: ignore[attr-defined]
        for entry in platforms.values():
            wanted |= {p["sha256"] for p in entry["debian"]} | {w["sha256"] for w in entry["wheels"]}
    for blob in (cache / "blobs" / "sha256").iterdir():
        if blob.name not in wanted and len(blob.name) == 64:
            blob.unlink()
    for folder in ("layers", "manifests", *(() if unpacked else ("unpacked", "interpreters"))):
        shutil.rmtree(cache / folder, ignore_errors=True)


def _measure(platform: str | None) -> tuple[list[float], list[dict[str, object]]]:
    with tempfile.TemporaryDirectory(prefix="omi-bench-") as scratch:
        root = Path(scratch)
        example = root / "iris-sklearn"
        shutil.copytree(REPO / "examples" / "iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out"))
        lock = json.loads((example / "omi.lock").read_text())
        cache = root / "cache"
        cold, images = _build(example, cache, root / "out", platform)
        _drop_layers(cache, lock, unpacked=True)
        warm, _ = _build(example, cache, root / "out-warm", platform)
        _drop_layers(cache, lock, unpacked=False)
        archives, _ = _build(example, cache, root / "out-archives", platform)
        model = example / "model.npz"
        model.write_bytes(model.read_bytes() + b"\0")
        edit, _ = _build(example, cache, root / "out", platform)
        with (example / "model.py").open("a") as code:
            code.write("\n# an edit\n")
        code_edit, _ = _build(example, cache, root / "out", platform)
        noop = statistics.median(_build(example, cache, root / "out", platform)[0] for _ in range(5))
    return [cold, warm, archives, edit, code_edit, noop], images


def main() -> None:
    # An installed omi-build has its bytecode (pip compiles wheels at install time); this
    # checkout may be run with PYTHONDONTWRITEBYTECODE, so compile it as pip would.
    compileall.compile_dir(REPO / "omi_build", quiet=1)
    both, images = _measure(None)
    amd64, _ = _measure("linux/amd64")
    print(f"{'step':<28}{'both platforms':>16}{'amd64 only':>12}")
    steps = (
        "cold (empty cache)",
        "warm download cache",
        "downloaded archives only",
        "after a model-file change",
        "after a model.py change",
        "no-op (median of 5)",
    )
    for name, first, second in zip(steps, both, amd64, strict=True):
        print(f"{name:<28}{first:>15.2f}s{second:>11.2f}s")
    print(f"\nimages (index {images[0]['index']}):")
    for image in images:
        size, packed = int(image["size"]), int(image["compressed_size"])  # type: ignore[call-overload]
        print(
            f"  {image['platform']:<14} {size / 1e6:7.1f} MB uncompressed {packed / 1e6:7.1f} MB compressed"
        )


if __name__ == "__main__":
    main()
