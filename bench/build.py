"""Build timings and image sizes for examples/iris-sklearn (issue: image builder).

Every figure is the whole `omi-build build` process, start to exit, on a copy of the example
with a cache of its own:
  cold         empty cache (downloads, layers, everything)
  warm fetch   downloads cached, no layer cached
  model edit   after changing only model.npz
  no-op        nothing changed (median of 5)
"""

from __future__ import annotations

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


def _build(example: Path, cache: Path, out: Path) -> tuple[float, list[dict[str, object]]]:
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    start = time.perf_counter()
    done = subprocess.run(
        [str(TOOL), "--format", "json", "build", str(example), "--output", str(out)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return time.perf_counter() - start, json.loads(done.stdout)


def _keep_only_downloads(cache: Path, lock: dict[str, object]) -> None:
    wanted = set()
    for platforms in lock["targets"].values():  # type: ignore[attr-defined]
        for entry in platforms.values():
            wanted |= {p["sha256"] for p in entry["debian"]} | {w["sha256"] for w in entry["wheels"]}
    for blob in (cache / "blobs" / "sha256").iterdir():
        if blob.name not in wanted and len(blob.name) == 64:
            blob.unlink()
    for folder in ("layers", "manifests", "pyc"):
        shutil.rmtree(cache / folder, ignore_errors=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="omi-bench-") as scratch:
        root = Path(scratch)
        example = root / "iris-sklearn"
        shutil.copytree(REPO / "examples" / "iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out"))
        cache = root / "cache"
        cold, images = _build(example, cache, root / "out")
        # Debian indexes stay too: they are downloads, and `build` only reads them to re-lock.
        _keep_only_downloads(cache, json.loads((example / "omi.lock").read_text()))
        warm, _ = _build(example, cache, root / "out-warm")
        model = example / "model.npz"
        model.write_bytes(model.read_bytes() + b"\0")
        edit, _ = _build(example, cache, root / "out")
        noop = statistics.median(_build(example, cache, root / "out")[0] for _ in range(5))
    print(f"{'step':<28}{'seconds':>9}")
    for name, seconds in (
        ("cold (empty cache)", cold),
        ("warm download cache", warm),
        ("after a model-file change", edit),
        ("no-op rebuild (median of 5)", noop),
    ):
        print(f"{name:<28}{seconds:>9.2f}")
    print(f"\nimages (index {images[0]['index']}):")
    for image in images:
        size, packed = int(image["size"]), int(image["compressed_size"])  # type: ignore[call-overload]
        print(
            f"  {image['platform']:<14} {size / 1e6:7.1f} MB uncompressed {packed / 1e6:7.1f} MB compressed"
        )


if __name__ == "__main__":
    main()
