"""The serving configuration the runtime reads: the manifest's contract, as plain JSON.

The runtime never imports the builder, so it cannot read omi.yaml; the builder writes what the
server needs (interface, limits, file digests) to /opt/omi/omi.json in the image.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from omi_build.manifest import Manifest, Tensor

CONFIG_VERSION = "omi-runtime/v1"


def _tensor(tensor: Tensor) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "media_types": list(tensor.media_types),
        "max_bytes": tensor.max_bytes,
        "description": tensor.description,
    }


def of(
    manifest: Manifest, file_digests: dict[str, str], *, model_dir: str, target: str | None = None
) -> dict[str, Any]:
    serving = manifest.serving
    config: dict[str, Any] = {
        "apiVersion": CONFIG_VERSION,
        "model": {
            "name": manifest.metadata.name,
            "version": manifest.metadata.version,
            "description": manifest.metadata.description,
            "authors": list(manifest.metadata.authors),
            "license": manifest.metadata.license,
            "module": manifest.model.module_file,
            "class": manifest.model.class_name,
            "directory": model_dir,
            "inputs": [_tensor(t) for t in manifest.model.inputs],
            "outputs": [_tensor(t) for t in manifest.model.outputs],
            "files": file_digests,
            # not used by the server; `omi-build test LAYOUT` reads them from the image
            "examples": [
                {"name": e.name, "inputs": e.inputs, "outputs": e.outputs, "tolerance": e.tolerance}
                for e in manifest.model.examples
            ],
        },
        "serving": {
            "port": serving.port,
            "protocols": list(serving.protocols),
            "batching": asdict(serving.batching),
            "max_message_bytes": serving.max_message_bytes,
            "timeouts": asdict(serving.timeouts),
            "concurrency": asdict(serving.concurrency),
        },
    }
    if target is not None:
        # what the runtime probes for at start-up (a CUDA image looks for a GPU)
        spec = manifest.target(target)
        config["device"] = {"accelerator": spec.accelerator, "cuda": spec.cuda}
    return config


def render(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=1, sort_keys=True) + "\n").encode()
