"""Registry figures for examples/iris-sklearn (issue: registries, a shared cache, deployment).

Starts Debian's docker-registry on a free 127.0.0.1 port (no referrers API: the fallback index)
and, on a copy of the example, both platforms, each whole `omi-build` process timed:
  push          the signed image (every blob new), then again (every blob there)
  pull          into an empty folder, with every referrer
  verify REF    pulled into a scratch layout and verified (--require sbom,provenance,model)
  cache repo    a rebuild with an empty local cache pulling every layer from --cache-repo,
                beside the same rebuild from a warm download cache (layers rebuilt from the
                downloaded archives: what a runner without the cache repo does)
  deploy kserve the InferenceService, verification included
Best of three runs each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = 3


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _registry(root: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = _port()
    root.mkdir(parents=True)
    (root / "config.yml").write_text(
        f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f'http: {{addr: "127.0.0.1:{port}"}}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    return f"127.0.0.1:{port}", process


def _omi(*args: str, cache: Path, ok: bool = True) -> float:
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache), "COSIGN_PASSWORD": "bench"}
    env.pop("SOURCE_DATE_EPOCH", None)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "omi_build", "--format", "json", *args],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if ok and done.returncode != 0:
        sys.exit(f"omi-build {' '.join(args)} failed: {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    if shutil.which("docker-registry") is None:
        sys.exit("docker-registry is not installed: make deps")
    with tempfile.TemporaryDirectory(prefix="omi-bench-registry-") as scratch:
        work = Path(scratch)
        example = work / "iris-sklearn"
        shutil.copytree(REPO / "examples" / "iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out"))
        address, process = _registry(work / "registry")
        try:
            seed = work / "seed-cache"
            layout = work / "out"
            cold = _omi("build", "--locked", str(example), "--output", str(layout), cache=seed)
            _omi("keygen", "--output-key-prefix", str(work / "cosign"), cache=seed)
            _omi("sign", "--key", str(work / "cosign.key"), str(layout), cache=seed)
            image = f"{address}/models/iris"
            first = _omi("push", str(layout), image, cache=seed)
            again = min(_omi("push", str(layout), image, cache=seed) for _ in range(RUNS))
            pulls = []
            for n in range(RUNS):
                pulls.append(_omi("pull", f"{image}:1.0.0", str(work / f"pulled{n}"), cache=seed))
            trust = ["--key", str(work / "cosign.pub")]
            verify = min(
                _omi("verify", *trust, "--require", "sbom,provenance,model", f"{image}:1.0.0", cache=seed)
                for _ in range(RUNS)
            )
            deploy = min(_omi("deploy", "kserve", *trust, f"{image}:1.0.0", cache=seed) for _ in range(RUNS))
            cache_repo = f"{address}/ci/omi-cache"
            populate = _omi("build", "--locked", str(example), "--output", str(work / "o0"),
                            "--cache-repo", cache_repo, cache=seed)  # fmt: skip
            warm_downloads, from_repo = [], []
            for n in range(RUNS):
                downloads = work / f"downloads{n}"
                shutil.copytree(seed, downloads, ignore=shutil.ignore_patterns("locks"))
                _omi("cache", "clean", "--keep-downloads", cache=downloads)
                warm_downloads.append(
                    _omi("build", "--locked", str(example), "--output", str(work / f"a{n}"), cache=downloads)
                )
                from_repo.append(
                    _omi("build", "--locked", str(example), "--output", str(work / f"b{n}"),
                         "--cache-repo", cache_repo, cache=work / f"empty{n}")
                )  # fmt: skip
                shutil.rmtree(downloads)
        finally:
            process.terminate()
            process.wait(timeout=10)
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        print(
            f"iris layout, both platforms, signed: {size / 1e6:.1f} MB of blobs (built cold in {cold:.1f} s)"
        )
        print(f"push, every blob new:                 {first:.2f} s")
        print(f"push again, every blob there:         {again:.2f} s")
        print(f"pull into an empty folder:            {min(pulls):.2f} s")
        print(f"verify REF (pull + verify, required): {verify:.2f} s")
        print(f"deploy kserve REF (verify included):  {deploy:.2f} s")
        print(f"build pushing every layer to the cache repo (layers cached locally): {populate:.2f} s")
        a, b = min(warm_downloads), min(from_repo)
        print(f"rebuild, warm download cache, no cache repo: {a:.2f} s")
        print(f"rebuild, empty cache, every layer from the cache repo: {b:.2f} s ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
