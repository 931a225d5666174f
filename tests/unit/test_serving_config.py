"""The serving config: the manifest's contract as the JSON the runtime reads."""

from __future__ import annotations

import json

from omi_build import serving_config
from omi_build.manifest import load
from tests.conftest import EXAMPLES


def test_the_config_carries_the_interface_the_limits_and_the_file_digests() -> None:
    manifest = load(EXAMPLES / "iris-sklearn")
    digests = {"model.py": "sha256:" + "1" * 64, "model.npz": "sha256:" + "2" * 64}
    config = serving_config.of(manifest, digests, model_dir="/opt/omi/model")
    assert config["apiVersion"] == serving_config.CONFIG_VERSION
    model = config["model"]
    assert (model["name"], model["version"]) == (manifest.metadata.name, manifest.metadata.version)
    assert (model["module"], model["class"]) == (manifest.model.module_file, manifest.model.class_name)
    assert [t["name"] for t in model["inputs"]] == [t.name for t in manifest.model.inputs]
    assert [t["shape"] for t in model["outputs"]] == [list(t.shape) for t in manifest.model.outputs]
    assert len(model["examples"]) == len(manifest.model.examples)
    assert config["serving"]["port"] == manifest.serving.port
    assert config["serving"]["protocols"] == list(manifest.serving.protocols)
    assert digests.items() <= _flat_digests(config).items()


def _flat_digests(config: dict[str, object]) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and value.startswith("sha256:"):
                    found[key] = value
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def test_render_is_canonical_so_the_layer_is_reproducible() -> None:
    manifest = load(EXAMPLES / "iris-sklearn")
    config = serving_config.of(manifest, {"model.py": "sha256:" + "1" * 64}, model_dir="/opt/omi/model")
    rendered = serving_config.render(config)
    assert json.loads(rendered) == config
    assert serving_config.render(json.loads(rendered)) == rendered
