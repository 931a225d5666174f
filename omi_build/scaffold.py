"""`omi-build init`: a commented starter omi.yaml and a model class that validate as written."""

from __future__ import annotations

import re
from pathlib import Path

from omi_build.errors import OmiError
from omi_build.manifest import MANIFEST_NAME, types
from omi_build.suites import SUITES

_MANIFEST = """\
# omi.yaml: how omi-build builds, serves and secures this model.
# Check it with `omi-build validate`; print the full schema with `omi-build schema`.
apiVersion: omi/v1
kind: Model
metadata:
  name: {name}                 # a DNS-1123 label: lower-case letters, digits, '-'
  version: 0.1.0
  description: What the model does, in a sentence
  license: Apache-2.0          # an SPDX expression
model:
  entrypoint: model.py:Model   # file.py:Class, relative to this file
  files: [model.py]            # globs of everything the image needs ('**' for any depth)
  inputs:
    - {{name: features, datatype: FP32, shape: [-1, 4]}}   # -1: any size (the batch)
  outputs:
    - {{name: scores, datatype: FP32, shape: [-1]}}
  examples:                    # `omi-build test` sends these through every protocol
    - inputs: {{features: [[1.0, 2.0, 3.0, 4.0]]}}
      outputs: {{scores: [10.0]}}
python:
  version: "{python}"              # quoted: 3.10 unquoted would be the number 3.1
  requirements: [numpy==2.2.6] # pin with == for reproducible builds
targets:
  cpu:
    accelerator: cpu
    platforms: [linux/amd64, linux/arm64]
  # cuda:
  #   accelerator: cuda
  #   cuda: "12.4"
  #   platforms: [linux/amd64]
serving:
  port: {serving.port}
  protocols: [{protocols}]
  batching: {{max_batch_size: {batching.max_batch_size}, max_wait_ms: {batching.max_wait_ms:g}}}
security:
  user: {security.user}                  # never root
  allow_source_builds: false   # wheels only
build:
  base: {{debian: {build.base.debian}}}
  compression: {build.compression}
"""

_MODEL = '''\
"""A starter model: replace the arithmetic with yours."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class Model:
    def load(self, model_dir: Path) -> None:
        """Called once at start-up; read weights from model_dir here."""
        self.weights = np.ones(4, dtype=np.float32)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Answer a whole batch: every array's first dimension is the batch."""
        return {"scores": inputs["features"] @ self.weights}
'''


def _starter(name: str) -> str:
    """The starter manifest, spelling out the defaults (from the manifest's types, not copies)."""
    serving, build = types.Serving(), types.Build()
    return _MANIFEST.format(
        name=name,
        python=SUITES[build.base.debian].python,
        serving=serving,
        batching=serving.batching,
        protocols=", ".join(serving.protocols),
        security=types.Security(),
        build=build,
    )


def package_name(directory: Path) -> str:
    """A DNS-1123 label made from a directory name."""
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")[:63].strip("-")
    return name or "model"


def write(directory: Path, *, force: bool = False) -> list[Path]:
    manifest = directory / MANIFEST_NAME
    if manifest.exists() and not force:
        msg = f"{manifest} already exists"
        raise OmiError(msg, hint="pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    model = directory / "model.py"
    if not model.exists():
        model.write_text(_MODEL, encoding="utf-8")
        written.append(model)
    manifest.write_text(_starter(package_name(directory)), encoding="utf-8")
    written.append(manifest)
    return written
