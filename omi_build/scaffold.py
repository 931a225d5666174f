"""`omi-build init`: a commented starter omi.yaml and a model class that validate as written."""

from __future__ import annotations

import re
from pathlib import Path

from omi_build.errors import OmiError
from omi_build.manifest import MANIFEST_NAME

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
  version: "3.11"              # quoted: 3.10 unquoted would be the number 3.1
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
  port: 45000
  protocols: [omi-v1, oip-v2]
  batching: {{max_batch_size: 32, max_wait_ms: 2}}
security:
  user: 65532                  # never root
  allow_source_builds: false   # wheels only
build:
  base: {{debian: bookworm}}
  compression: gzip
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
    manifest.write_text(_MANIFEST.format(name=package_name(directory)), encoding="utf-8")
    written.append(manifest)
    return written
