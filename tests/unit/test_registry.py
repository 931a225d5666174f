"""Offline parts of registries and deployment: references, credentials from auth files, the
InferenceService and the rules the CRD's schema leaves out."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from omi_build import deploy
from omi_build.errors import RegistryError
from omi_build.registry import Reference, credentials, fallback_tag, looks_like_reference
from tests.conftest import REPO

CRD = REPO / "tests" / "vectors" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/iris", "127.0.0.1:5000", "iris", None, None),
        ("localhost/team/iris:1.0.0", "localhost", "team/iris", "1.0.0", None),
        (f"ghcr.io/o/iris@{DIGEST}", "ghcr.io", "o/iris", None, DIGEST),
        (f"[::1]:5000/iris:v1@{DIGEST}", "[::1]:5000", "iris", "v1", DIGEST),
        ("python:3.11", "docker.io", "library/python", "3.11", None),
    ],
)
def test_references_parse_as_docker_does(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    parsed = Reference.parse(text)
    assert (parsed.registry, parsed.repository) == (registry, repository)
    assert (parsed.tag, parsed.digest) == (tag, digest)


def test_loopback_hosts_and_docker_hub_api() -> None:
    assert Reference.parse("127.0.0.1:5000/a").loopback
    assert Reference.parse("[::1]:5000/a").loopback
    assert Reference.parse("localhost:5000/a").loopback
    assert not Reference.parse("registry.example.com/a").loopback
    assert Reference.parse("alpine").api == "registry-1.docker.io"


@pytest.mark.parametrize("text", ["127.0.0.1:5000/Iris", "host:5000/a:bad tag", "host/a@sha256:12", "a b/c"])
def test_bad_references_say_what_is_wrong(text: str) -> None:
    with pytest.raises(RegistryError, match="bad image reference") as failure:
        Reference.parse(text)
    assert "host[:port]/repository" in (failure.value.hint or "")


def test_references_are_told_from_paths_and_labels() -> None:
    assert looks_like_reference("127.0.0.1:5000/iris:1.0.0")
    assert looks_like_reference("ghcr.io/o/iris")
    for other in ("examples/iris-sklearn", "//examples/iris-sklearn:cpu", ":cpu", "./x/y", "/abs/path"):
        assert not looks_like_reference(other)


def test_the_fallback_tag_is_the_digest_with_a_dash() -> None:
    assert fallback_tag(DIGEST) == "sha256-" + "ab" * 32


def test_credentials_come_from_the_auth_files_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMI_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "missing.json"))
    assert credentials("reg.example:5000", "team/iris") is None
    docker = tmp_path / "docker" / "config.json"
    docker.parent.mkdir()
    encoded = base64.b64encode(b"alice:pw1").decode()
    docker.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": encoded}}}))
    found = credentials("docker.io", "library/python")
    assert found is not None
    assert (found.username, found.password) == ("alice", "pw1")
    assert "pw1" not in repr(found)
    podman = tmp_path / "config" / "containers" / "auth.json"
    podman.parent.mkdir(parents=True)
    per_repo = base64.b64encode(b"bob:pw2").decode()
    podman.write_text(json.dumps({"auths": {"reg.example:5000/team": {"auth": per_repo}}}))
    found = credentials("reg.example:5000", "team/iris")
    assert found is not None
    assert (found.username, found.source) == ("bob", str(podman))
    monkeypatch.setenv("OMI_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("OMI_REGISTRY_PASSWORD", "token")
    found = credentials("reg.example:5000", "team/iris")
    assert found is not None
    assert found.username == "ci"


def test_a_damaged_auth_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMI_REGISTRY_USERNAME", raising=False)
    broken = tmp_path / "auth.json"
    broken.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(broken))
    with pytest.raises(RegistryError, match=str(broken)):
        credentials("reg.example", "a")


def _image(accelerator: str = "cpu") -> deploy.Image:
    config = {
        "model": {
            "name": "Iris Classifier",
            "version": "1.0.0",
            "description": "iris",
            "authors": ["a"],
            "license": "MIT",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "max_bytes": None}],
            "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1], "max_bytes": None}],
        },
        "serving": {
            "port": 45000,
            "max_message_bytes": 64 << 20,
            "timeouts": {"startup_s": 300, "request_s": 60},
        },
        "device": {"accelerator": accelerator, "cuda": "12.4"} if accelerator == "cuda" else None,
    }
    return deploy.Image(
        reference=f"127.0.0.1:5000/iris@{DIGEST}",
        config=config,
        uid=65532,
        annotations={"ml.openmodel.port": "45000", "org.opencontainers.image.title": "x"},
    )


@pytest.mark.parametrize(("mode", "port"), [("knative", "h2c"), ("raw", "grpc-omi")])
def test_the_inference_service_passes_the_crd_and_the_rules_it_leaves_out(mode: str, port: str) -> None:
    document = deploy.kserve(_image(), mode=mode)
    assert deploy.check_kserve(document, mode=mode) == []
    assert deploy.validate_crd(yaml.safe_load(deploy.to_yaml(document)), CRD) == []
    container = document["spec"]["predictor"]["containers"][0]
    assert container["ports"][0]["name"] == port
    assert document["metadata"]["name"] == "iris-classifier"
    assert document["metadata"]["annotations"]["ml.openmodel.port"] == "45000"
    assert ("serving.kserve.io/deploymentMode" in document["metadata"]["annotations"]) is (mode == "raw")
    assert "protocolVersion" not in json.dumps(document)


def test_a_cuda_image_asks_for_a_gpu() -> None:
    container = deploy.kserve(_image("cuda"))["spec"]["predictor"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}


def test_what_the_crd_accepts_but_kserve_does_not_is_refused() -> None:
    document = deploy.kserve(_image())
    container = document["spec"]["predictor"]["containers"][0]
    container["ports"].append({"name": "metrics", "containerPort": 9090})
    container["image"] = "127.0.0.1:5000/iris:1.0.0"
    assert deploy.validate_crd(document, CRD) == []  # the schema lets both through
    problems = deploy.check_kserve(document, mode="knative")
    assert any("exposes 2 ports" in p for p in problems)
    assert any("not pinned by digest" in p for p in problems)
    container["ports"] = [{"name": "grpc", "containerPort": 45000}]
    assert any("named h2c" in p for p in deploy.check_kserve(document, mode="knative"))
    container["ports"] = [{"name": "h2c", "containerPort": "45000"}]
    assert deploy.validate_crd(document, CRD)  # a string port: the schema catches this one


def test_modzy_metadata_names_inputs_outputs_and_resources() -> None:
    described = deploy.modzy(_image(), source="iris.tar")
    assert described["name"] == "Iris Classifier"
    assert described["inputs"]["x"]["maxSize"] == "64M"
    assert described["resources"]["required"]["gpu"]["count"] == 0
    assert described["environment"] == {"PSC_MODEL_PORT": "45000"}
