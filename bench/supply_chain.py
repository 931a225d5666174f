"""Supply-chain figures for examples/iris-sklearn (issue: supply chain).

On a copy of the example built for both platforms (with the usual download cache, so only the
first run downloads):
  sbom         packages per platform image in the SPDX SBOM, by kind, and the documents' sizes
  sign         `omi-build sign --key` on a fresh copy of the layout, whole process (median of 5)
  verify       `omi-build verify --key --require sbom,provenance,model`, whole process (median of 5)
  in-process   the same two through omi_build.api, without Python's start-up and imports
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omi_build import api

REPO = Path(__file__).resolve().parent.parent
TOOL = Path(sys.executable).with_name("omi-build")
RUNS = 5
PASSWORD = "bench"


def _run(*argv: str) -> float:
    env = {**os.environ, "COSIGN_PASSWORD": PASSWORD}
    start = time.perf_counter()
    subprocess.run([str(TOOL), *argv], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def _sbom_counts(spdx: Path) -> str:
    document = json.loads(spdx.read_text())
    kinds: collections.Counter[str] = collections.Counter()
    for package in document["packages"]:
        purls = [
            r["referenceLocator"] for r in package.get("externalRefs", []) if r.get("referenceType") == "purl"
        ]
        if purls and purls[0].startswith("pkg:deb/"):
            kinds["debian"] += 1
        elif purls and purls[0].startswith("pkg:pypi/"):
            kinds["wheels"] += 1
        else:
            kinds[package.get("primaryPackagePurpose", "other").lower()] += 1
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{len(document['packages'])} packages ({listed})"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="omi-bench-sign-") as scratch:
        root = Path(scratch)
        example = root / "iris-sklearn"
        shutil.copytree(
            REPO / "examples" / "iris-sklearn",
            example,
            ignore=shutil.ignore_patterns("omi-out", "__pycache__"),
        )
        built = root / "built"
        subprocess.run(
            [str(TOOL), "build", "--locked", str(example), "--output", str(built)],
            check=True,
            capture_output=True,
        )
        for spdx in sorted(root.glob("built.*.spdx.json")):
            arch = spdx.name.split(".")[1]
            cdx = spdx.with_name(f"built.{arch}.cdx.json")
            print(
                f"sbom linux/{arch:6} {_sbom_counts(spdx)}; "
                f"SPDX {spdx.stat().st_size / 1024:.0f} KiB, CycloneDX {cdx.stat().st_size / 1024:.0f} KiB"
            )
        env_password = PASSWORD.encode()
        private, public = api.keygen(root / "cosign", env_password)
        signs, verifies = [], []
        for n in range(RUNS):
            layout = root / f"layout-{n}"
            shutil.copytree(built, layout)
            signs.append(_run("sign", "--key", str(private), str(layout)))
            verifies.append(
                _run("verify", "--key", str(public), "--require", "sbom,provenance,model", str(layout))
            )
        layout = root / "in-process"
        shutil.copytree(built, layout)
        start = time.perf_counter()
        _, signed = api.sign(str(layout), key=private, password=env_password)
        sign_inside = time.perf_counter() - start
        start = time.perf_counter()
        _, checks = api.verify(str(layout), key=public, require=["sbom", "provenance", "model"])
        verify_inside = time.perf_counter() - start
        print(f"sign, whole process      median {statistics.median(signs):.2f} s (min {min(signs):.2f})")
        print(
            f"verify, whole process    median {statistics.median(verifies):.2f} s (min {min(verifies):.2f})"
        )
        print(f"sign, in-process         {sign_inside:.2f} s for {len(signed)} artifacts")
        print(f"verify, in-process       {verify_inside:.2f} s for {len(checks)} checks")


if __name__ == "__main__":
    main()
