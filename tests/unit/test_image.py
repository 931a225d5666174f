"""The OCI image config and manifest, and the docker-archive tar, offline."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from omi_build import image
from omi_build.digests import digest_of
from omi_build.manifest import load
from tests.conftest import EXAMPLES

from .layouts import tiny_layout


def test_an_image_runs_the_runtime_as_the_manifests_user_with_its_labels(tmp_path: Path) -> None:
    _, _, (amd64, arm64) = tiny_layout(tmp_path)
    config = json.loads(amd64.config)
    manifest = load(EXAMPLES / "iris-sklearn")
    uid = manifest.security.user
    assert uid != 0
    assert config["config"]["User"] == f"{uid}:{uid}"
    assert config["config"]["Entrypoint"] == ["/usr/bin/python3.11", "-I", "-u", "-m", "omi_runtime"]
    assert config["config"]["Cmd"] == ["serve"]
    assert config["config"]["ExposedPorts"] == {f"{manifest.serving.port}/tcp": {}}
    assert config["created"] == "1970-01-01T00:00:00Z"  # the source date epoch, not now
    assert [h["created_by"] for h in config["history"]] == ["omi-build: base", "omi-build: model"]
    assert (config["architecture"], "variant" in config) == ("amd64", False)
    assert (json.loads(arm64.config)["architecture"], json.loads(arm64.config)["variant"]) == ("arm64", "v8")
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == manifest.metadata.name
    assert labels["org.opencontainers.image.version"] == manifest.metadata.version
    oci = json.loads(amd64.manifest)
    assert oci["config"]["digest"] == digest_of(amd64.config)
    assert [layer["digest"] for layer in oci["layers"]] == [layer.blob.digest for layer in amd64.layers]
    assert oci["annotations"] == labels
    assert amd64.descriptor()["platform"] == {"architecture": "amd64", "os": "linux"}
    assert arm64.descriptor()["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    _, first, images = tiny_layout(tmp_path / "a")
    _, second, again = tiny_layout(tmp_path / "b")
    assert first == second
    assert [i.manifest for i in images] == [i.manifest for i in again]


def test_a_docker_archive_holds_the_images_blobs_and_its_manifest(tmp_path: Path) -> None:
    layout, _, (amd64, _) = tiny_layout(tmp_path)
    archive = tmp_path / "image.tar"
    image.write_docker_archive(archive, layout, amd64, repo_tag="tiny:1.0.0", epoch=0)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert manifest == [
        {
            "Config": f"blobs/sha256/{digest_of(amd64.config).removeprefix('sha256:')}",
            "RepoTags": ["tiny:1.0.0"],
            "Layers": [f"blobs/sha256/{layer.blob.digest.removeprefix('sha256:')}" for layer in amd64.layers],
        }
    ]
    assert set(manifest[0]["Layers"]) | {manifest[0]["Config"]} <= set(names)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
