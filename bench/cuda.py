"""CUDA image figures for examples/iris-cuda (issue: hardware targets).

On a copy of the example, cuda target, linux/amd64:
  cold          build with an empty cache (downloads included)
  warm          the same build again (no-op)
  model change  one byte of model.py changed
  size          the image, its layers, and what CUDA adds over the CPU image of the same manifest
  base          what NVIDIA's CUDA 12.4 runtime base would carry instead: the wheels of the
                libraries an nvidia/cuda 12.4 "runtime" image installs, sizes as the package
                index gives them (compressed; the base image itself cannot be pulled here)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from omi_build import api
from omi_build.build import BuiltTarget
from omi_build.image import Layout
from omi_build.lock import _wheels

REPO = Path(__file__).resolve().parent.parent
# What the nvidia/cuda 12.4 runtime image's cuda-libraries and NCCL packages hold, as wheels.
RUNTIME_BASE = [
    "nvidia-cuda-runtime-cu12==12.4.*", "nvidia-cublas-cu12==12.4.*", "nvidia-cufft-cu12==11.2.1.3",
    "nvidia-curand-cu12==10.3.5.147", "nvidia-cusolver-cu12==11.6.1.9", "nvidia-cusparse-cu12==12.3.1.170",
    "nvidia-npp-cu12==12.2.5.30", "nvidia-nvjpeg-cu12==12.3.1.117", "nvidia-cuda-nvrtc-cu12==12.4.*",
    "nvidia-nvjitlink-cu12==12.4.*", "nvidia-nvtx-cu12==12.4.*", "nvidia-nccl-cu12==2.21.5",
]  # fmt: skip


def _build(example: Path, out: Path, target: str) -> tuple[float, BuiltTarget]:
    start = time.perf_counter()
    built = api.build([str(example)], target=target, output=out, locked=True, platform="linux/amd64")
    return time.perf_counter() - start, built[0]


def _layers(built: object) -> list[tuple[str, int, int]]:
    layout = Layout.open(built.layout)  # type: ignore[attr-defined]
    manifest = json.loads(layout.blob(built.images[0].digest))  # type: ignore[attr-defined]
    config = json.loads(layout.blob(manifest["config"]["digest"]))
    names = [h["created_by"].removeprefix("omi-build: ") for h in config["history"]]
    return [(n, layer["size"], layer["digest"]) for n, layer in zip(names, manifest["layers"], strict=True)]


def _base_sizes() -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as scratch:
        source, output = Path(scratch, "r.in"), Path(scratch, "pylock.toml")
        source.write_text("\n".join(RUNTIME_BASE) + "\n")
        subprocess.run(
            [_wheels.uv(), "pip", "compile", str(source), "--python-platform", "x86_64-manylinux_2_36",
             "--python-version", "3.11", "--only-binary", ":all:", "--no-deps", "--format", "pylock.toml",
             "--output-file", str(output), "--quiet"],
            check=True, capture_output=True,
        )  # fmt: skip
        packages = tomllib.loads(output.read_text())["packages"]
    return len(packages), sum(int(p["wheels"][0]["size"]) for p in packages)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="omi-bench-cuda-") as scratch:
        root = Path(scratch)
        example = root / "iris-cuda"
        shutil.copytree(REPO / "examples" / "iris-cuda", example, ignore=shutil.ignore_patterns("omi-out"))
        os.environ["OMI_BUILD_CACHE"] = str(root / "cache")
        cold, built = _build(example, root / "out", "cuda")
        warm, _ = _build(example, root / "out", "cuda")
        model = example / "model.py"
        model.write_text(model.read_text() + "\n# changed\n")
        changed, built = _build(example, root / "out", "cuda")
        _, cpu = _build(example, root / "out-cpu", "cpu")
        print(f"cold build      {cold:6.2f} s  (empty cache: downloads, unpack, layers)")
        print(f"warm no-op      {warm:6.2f} s")
        print(f"model change    {changed:6.2f} s")
        image = built.images[0]
        print(f"cuda image      {image.size / 1e6:7.1f} MB ({image.compressed_size / 1e6:.1f} MB compressed)")
        cpu_image = cpu.images[0]
        print(
            f"cpu image       {cpu_image.size / 1e6:7.1f} MB "
            f"({cpu_image.compressed_size / 1e6:.1f} MB compressed)"
        )
        cpu_digests = {digest for _, _, digest in _layers(cpu)}
        for name, size, digest in _layers(built):
            shared = "shared with cpu" if digest in cpu_digests else ""
            print(f"  layer {name:32} {size / 1e6:7.1f} MB compressed  {shared}")
    count, size = _base_sizes()
    print(f"nvidia/cuda 12.4 runtime base, as wheels: {count} packages, {size / 1e6:.0f} MB compressed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
