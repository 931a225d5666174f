"""The iris image through a real registry: Debian's docker-registry 2.8 on 127.0.0.1 (started by
the test, with and without htpasswd auth; no referrers API, so the fallback index carries the
referrers). Build, sign, push, pull, verify against the registry, the shared build cache,
deployment descriptions that verify first, and loading into containers-storage."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from omi_build import api, deploy
from omi_build.build import BuiltImage
from omi_build.errors import RegistryError, VerificationError
from omi_build.image.layout import Layout
from omi_build.layers import built_blobs
from omi_build.registry import Client, Reference, fallback_tag, list_referrers
from omi_build.store import Store
from tests.conftest import REPO

from .conftest import copy_example, free_port

pytestmark = pytest.mark.integration
CRD = REPO / "tests" / "vectors" / "kserve" / "serving.kserve.io_inferenceservices.yaml"
USER, PASSWORD = "ci", "s3cret-pw"


def _htpasswd(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415 - bcrypt through libxcrypt; deprecated, still in 3.11

        path.write_text(f"{USER}:{crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")  # noqa: S324


def _start_registry(root: Path, *, auth: bool) -> tuple[str, subprocess.Popen[bytes]]:
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry is not installed (make deps installs it)")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if auth:
        _htpasswd(root / "htpasswd")
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}
    (root / "config.yml").write_text(yaml.safe_dump(config))
    # The registry reads REGISTRY_* variables as configuration: REGISTRY_AUTH_FILE (a client's
    # setting) would break it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL, stderr=log, env=env
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # 401: up, with auth
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        process.wait(timeout=10)
        log.close()
        pytest.fail(
            f"docker-registry did not start: {(root / 'registry.log').read_text(errors='replace')[-2000:]}"
        )
    log.close()  # the child holds its own descriptor
    return f"127.0.0.1:{port}", process


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    address, process = _start_registry(tmp_path / "registry", auth=False)
    yield address
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[str]:
    address, process = _start_registry(tmp_path / "private", auth=True)
    yield address
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def _isolated_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("OMI_REGISTRY_USERNAME", raising=False)


def _signed_copy(images: list[BuiltImage], tmp_path: Path) -> tuple[Path, Path]:
    layout = tmp_path / "layout"
    shutil.copytree(images[0].layout, layout)
    private, public = api.keygen(tmp_path / "cosign", b"throwaway")
    api.sign(str(layout), key=private, password=b"throwaway")
    return layout, public


def test_push_pull_and_verify_against_the_registry(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, registry: str
) -> None:
    _, images = iris_build
    layout, public = _signed_copy(images, tmp_path)
    pushed = api.push(str(layout), f"{registry}/models/iris")
    index = Layout.open(layout).target_index()
    assert pushed.digest == index.digest
    assert pushed.reference == f"{registry}/models/iris:1.0.0@{index.digest}"
    assert not pushed.referrers_api  # docker-registry 2.8: the fallback tag carries them
    with Client(Reference.parse(registry + "/models/iris")) as client:
        assert client.tags("models/iris").count(fallback_tag(index.digest)) == 1
        kinds = {d["artifactType"] for d in list_referrers(client, "models/iris", images[0].digest)}
    assert {"application/vnd.dev.sigstore.bundle.v0.3+json", "application/spdx+json"} <= kinds
    pulled = api.pull(f"{registry}/models/iris:1.0.0", tmp_path / "pulled")
    assert pulled.digest == index.digest
    assert [i.digest for i in Layout.open(pulled.directory).images()] == [i.digest for i in images]
    where, checks = api.verify(
        f"{registry}/models/iris:1.0.0", key=public, require=["sbom", "provenance", "model"]
    )
    assert where.endswith(index.digest)
    assert {c.what for c in checks} >= {"signature", "classic signature", "https://spdx.dev/Document"}
    again = api.push(str(layout), f"{registry}/models/iris")
    assert set(again.blobs) == {"exists"}  # nothing uploaded twice
    with pytest.raises(RegistryError, match="does not exist"):
        api.pull(f"{registry}/models/iris@sha256:{'0' * 64}", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_basic_auth_credentials_from_the_auth_file(
    iris_build: tuple[Path, list[BuiltImage]],
    tmp_path: Path,
    private_registry: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, images = iris_build
    ref = f"{private_registry}/iris"
    with pytest.raises(RegistryError, match="needs credentials"):
        api.push(str(images[0].layout), ref)
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps({"auths": {private_registry: {"auth": base64.b64encode(b"ci:wrong").decode()}}})
    )
    with pytest.raises(RegistryError, match="refused the credentials"):
        api.push(str(images[0].layout), ref)
    auth.write_text(
        json.dumps(
            {"auths": {private_registry: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
        )
    )
    assert api.push(str(images[0].layout), ref).digest == images[0].index
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))
    monkeypatch.setenv("OMI_REGISTRY_USERNAME", USER)
    monkeypatch.setenv("OMI_REGISTRY_PASSWORD", PASSWORD)
    assert api.pull(f"{ref}:1.0.0", tmp_path / "pulled").digest == images[0].index


def test_an_unreachable_registry_is_clear(iris_build: tuple[Path, list[BuiltImage]]) -> None:
    _, images = iris_build
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        api.push(str(images[0].layout), f"127.0.0.1:{free_port()}/iris")


def _build(example: Path, cache: Path, out: Path, cache_repo: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMI_BUILD_CACHE": str(cache)}
    env.pop("SOURCE_DATE_EPOCH", None)
    command = [
        sys.executable, "-m", "omi_build", "--format", "json", "build", "--locked", str(example),
        "--output", str(out), "--cache-repo", cache_repo, *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_runners_share_layers_through_a_cache_repo(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, registry: str
) -> None:
    directory, images = iris_build
    example = copy_example(tmp_path)
    cache_repo = f"{registry}/ci/omi-cache"
    # Two runners with the cache of the session's build, writing one cache repo at once.
    runners = []
    for n in range(2):
        shutil.copytree(directory / "cache", tmp_path / f"cache{n}", ignore=shutil.ignore_patterns("locks"))
        runners.append(_build(example, tmp_path / f"cache{n}", tmp_path / f"out{n}", cache_repo))
    for runner in runners:
        _, err = runner.communicate(timeout=600)
        assert runner.returncode == 0, err
    # A third with an empty cache: every layer comes from the repo, no package is downloaded.
    fresh = _build(
        example, tmp_path / "empty", tmp_path / "out-fresh", cache_repo, "--push", f"{registry}/ci/iris"
    )
    out, err = fresh.communicate(timeout=600)
    assert fresh.returncode == 0, err
    built = json.loads(out)
    assert {row["digest"] for row in built["images"]} == {image.digest for image in images}
    assert built["pushed"][0]["digest"] == images[0].index  # build --push, mounted from the cache repo
    assert "mounted" in built["pushed"][0]["blobs"]
    store = Store(tmp_path / "empty")
    held = {p.name for p in store.blobs.iterdir()}
    assert held <= built_blobs(store), "the fresh runner downloaded packages instead of layers"
    # Every entry in the repo names a blob the registry has.
    with Client(Reference.parse(cache_repo)) as client:
        tags = [t for t in client.tags("ci/omi-cache") if t.startswith("layer-")]
        assert len(tags) >= 5
        for tag in tags:
            manifest = client.get_manifest("ci/omi-cache", tag)
            assert manifest is not None
            assert client.has_blob("ci/omi-cache", manifest.json()["layers"][0]["digest"])


def test_deploy_verifies_first_and_writes_a_valid_inference_service(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, registry: str
) -> None:
    _, images = iris_build
    layout, public = _signed_copy(images, tmp_path)
    api.push(str(layout), f"{registry}/models/iris")
    api.push(str(images[0].layout), f"{registry}/models/unsigned")
    ref = f"{registry}/models/iris:1.0.0"
    for mode, port_name in (("knative", "h2c"), ("raw", "grpc-omi")):
        result = api.deploy_kserve(ref, mode=mode, crd=CRD, trust={"key": public})
        container = result.document["spec"]["predictor"]["containers"][0]
        assert container["image"] == f"{registry}/models/iris@{images[0].index}"
        assert container["ports"] == [{"name": port_name, "containerPort": 45000, "protocol": "TCP"}]
        assert {"name": "PSC_MODEL_PORT", "value": "45000"} in container["env"]
        assert container["readinessProbe"]["grpc"] == {"port": 45000}
        assert container["securityContext"]["runAsUser"] == 65532
        assert deploy.validate_crd(yaml.safe_load(result.text), CRD) == []
        assert result.verified
    with pytest.raises(VerificationError):
        api.deploy_kserve(f"{registry}/models/unsigned:1.0.0", trust={"key": public})
    other_private, other_public = api.keygen(tmp_path / "other", b"other")
    with pytest.raises(VerificationError):
        api.deploy_kserve(ref, trust={"key": other_public})
    # Tampered: the registry's copy of the SBOM replaced by other bytes under the same tag.
    assert api.deploy_kserve(f"{registry}/models/unsigned:1.0.0", skip_verify=True).skipped_verification
    modzy = api.deploy_modzy(ref, archive=tmp_path / "iris.tar", trust={"key": public})
    assert modzy.document["name"] == "iris-classifier"
    assert set(modzy.document["inputs"]) == {"measurements"}
    assert (tmp_path / "iris.tar").stat().st_size > 1_000_000
    del other_private


def test_a_tampered_image_in_the_registry_is_refused(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, registry: str
) -> None:
    _, images = iris_build
    layout, public = _signed_copy(images, tmp_path)
    api.push(str(layout), f"{registry}/models/iris")
    # Another image pushed under the signed tag (a registry compromise): its signatures do not match.
    api.push(str(images[0].layout), f"{registry}/models/other")
    opened = Layout.open(layout)
    config = opened.json_blob(opened.images()[0].manifest["config"]["digest"])
    config["config"]["Env"] = [*config["config"].get("Env", []), "INJECTED=1"]
    with Client(Reference.parse(f"{registry}/models/iris")) as client:
        raw = json.dumps(config).encode()
        import hashlib  # noqa: PLC0415
        import io  # noqa: PLC0415

        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        client.upload_blob("models/iris", digest, len(raw), lambda: io.BytesIO(raw))
        image = opened.images()[0]
        manifest = {
            **image.manifest,
            "config": {**image.manifest["config"], "digest": digest, "size": len(raw)},
        }
        data = json.dumps(manifest).encode()
        client.put_manifest(
            "models/iris",
            image.digest.replace(image.digest, "sha256:" + hashlib.sha256(data).hexdigest()),
            data,
            "application/vnd.oci.image.manifest.v1+json",
        )
        index = opened.json_blob(opened.target_index().digest)
        index["manifests"][0] = {
            **index["manifests"][0],
            "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
        client.put_manifest(
            "models/iris", "1.0.0", json.dumps(index).encode(), "application/vnd.oci.image.index.v1+json"
        )
    with pytest.raises(VerificationError):
        api.deploy_kserve(f"{registry}/models/iris:1.0.0", trust={"key": public})


def test_load_into_containers_storage(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, registry: str
) -> None:
    _, images = iris_build
    api.push(str(images[0].layout), f"{registry}/models/iris")
    root, runroot = tmp_path / "storage", tmp_path / "run"
    where = api.load_image(
        f"{registry}/models/iris:1.0.0",
        into="containers-storage",
        storage_driver="vfs",
        root=root,
        runroot=runroot,
    )
    assert where.endswith("models/iris:1.0.0")
    listed = subprocess.run(
        ["buildah", "--storage-driver", "vfs", "--root", str(root), "--runroot", str(runroot),
         "images", "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    names = [name for entry in json.loads(listed.stdout) for name in entry.get("names") or []]
    assert any(name.endswith("models/iris:1.0.0") for name in names), names
