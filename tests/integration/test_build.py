"""The image builder end to end: reproducible, runnable, readable by the container tools."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from omi_build import api, atomic
from omi_build.build import BuiltImage
from omi_build.engine import serving_config
from omi_build.errors import FetchError, LockError
from omi_build.image.layout import Layout

from .conftest import build_in, copy_example, images_of, run_in_runc

pytestmark = pytest.mark.integration
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "iris-sklearn" / "index-digest.txt"


def _index(images: list[BuiltImage]) -> str:
    (digest,) = {image.index for image in images}
    return digest


def _skopeo_digest(layout: Path) -> str:
    """The amd64 image's digest as skopeo reads it from the layout."""
    inspected = subprocess.run(
        ["skopeo", "inspect", f"oci:{layout}:1.0.0-amd64"], check=True, capture_output=True, text=True
    )
    digest: str = json.loads(inspected.stdout)["Digest"]
    return digest


def test_two_clean_builds_are_byte_identical_and_match_the_golden_digest(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, first = iris_build
    time.sleep(1.1)  # a different time, a different directory, a different cache
    second = build_in(tmp_path, monkeypatch)
    assert _index(first) == _index(second)
    assert [i.digest for i in first] == [i.digest for i in second]
    for suffix in ("amd64.spdx.json", "arm64.cdx.json", "amd64.provenance.json"):  # the same SBOM bytes
        assert (first[0].layout.parent / f"out.{suffix}").read_bytes() == (
            tmp_path / f"out.{suffix}"
        ).read_bytes()
    if os.environ.get("OMI_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(_index(first) + "\n")
    assert _index(first) == GOLDEN.read_text().strip(), "run `make update-golden` if the change is intended"


def test_layout_has_one_manifest_per_platform_and_the_omi_annotations(
    iris_build: tuple[Path, list[BuiltImage]],
) -> None:
    _, images = iris_build
    layout = images[0].layout
    top = json.loads((layout / "index.json").read_text())
    refs = {
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in top["manifests"]
        if "artifactType" not in m
    }
    assert refs == {"1.0.0", "1.0.0-amd64", "1.0.0-arm64"}
    attached = sorted(m["artifactType"] for m in top["manifests"] if "artifactType" in m)
    assert attached == sorted(  # per image: two SBOMs and provenance; the index: the model statement
        ["application/spdx+json", "application/vnd.cyclonedx+json", "application/vnd.in-toto+json"] * 2
        + ["application/vnd.in-toto+json"]
    )
    index = json.loads((layout / "blobs/sha256" / _index(images).removeprefix("sha256:")).read_text())
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}
    manifest = json.loads((layout / "blobs/sha256" / images[0].digest.removeprefix("sha256:")).read_text())
    annotations = manifest["annotations"]
    assert annotations["ml.openmodel.interfaces"] == '["kfserving","modzy"]'
    assert annotations["ml.openmodel.port"] == "45000"
    assert annotations["ml.openml.model_name"] == "iris-classifier"
    assert annotations["org.opencontainers.image.version"] == "1.0.0"
    config = json.loads(
        (layout / "blobs/sha256" / manifest["config"]["digest"].removeprefix("sha256:")).read_text()
    )
    assert config["config"]["User"] == "65532:65532"
    assert config["created"] == "2023-11-14T22:13:20Z"


def test_image_runs_python_and_imports_the_model_packages_as_nonroot(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    _, images = iris_build
    script = (
        "import os, numpy, grpc, google.protobuf, omi_runtime._server; "
        "open('/tmp/ok', 'w').write('x'); "
        "print(os.getuid(), os.getgid(), numpy.__version__)"
    )
    result = run_in_runc(
        images[0].layout, "1.0.0-amd64", ["/usr/bin/python3.11", "-I", "-c", script], tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["65532", "65532", "2.4.6"]


def test_bytecode_is_what_the_images_own_python_compiles(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    """numpy's _arraypad_impl compiles to other bytes under 3.11.7 (a likely host) than 3.11.2."""
    _, images = iris_build
    module = "/usr/lib/python3/dist-packages/numpy/lib/_arraypad_impl"
    cached = "/usr/lib/python3/dist-packages/numpy/lib/__pycache__/_arraypad_impl.cpython-311.pyc"
    script = (
        "import importlib.util, marshal, sys; "
        f"source = open('{module}.py', 'rb').read(); "
        f"pyc = open('{cached}', 'rb').read(); "
        "code = compile(source, '/' + sys.argv[1], 'exec', dont_inherit=True); "
        "print(pyc[16:] == marshal.dumps(code), pyc[4:8] == (1).to_bytes(4, 'little'))"
    )
    result = run_in_runc(
        images[0].layout,
        "1.0.0-amd64",
        ["/usr/bin/python3.11", "-I", "-S", "-c", script, module.lstrip("/") + ".py"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]  # the image's bytes, unchecked hash-based


def test_a_platform_built_alone_is_the_same_image(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """arm64 alone on this amd64 host still compiles with the amd64 image's Python (fetched
    for it), so its image is the one built beside amd64."""
    _, images = iris_build
    alone = build_in(tmp_path, monkeypatch, platform="linux/arm64")
    arm64 = next(i for i in images if i.platform == "linux/arm64")
    assert [(i.platform, i.digest) for i in alone] == [("linux/arm64", arm64.digest)]


def test_image_has_no_shell(iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path) -> None:
    _, images = iris_build
    result = run_in_runc(images[0].layout, "1.0.0-amd64", ["/bin/sh", "-c", "true"], tmp_path)
    assert result.returncode != 0


def test_skopeo_and_buildah_read_the_layout(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    _, images = iris_build
    layout = images[0].layout
    assert _skopeo_digest(layout) == images[0].digest
    storage = [
        "--root",
        str(tmp_path / "storage"),
        "--runroot",
        str(tmp_path / "run"),
        "--storage-driver",
        "vfs",
    ]
    pulled = subprocess.run(
        ["buildah", *storage, "pull", "--quiet", f"oci:{layout}:1.0.0-amd64"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pulled.returncode == 0, pulled.stderr
    listed = subprocess.run(
        ["buildah", *storage, "images", "--json"], check=True, capture_output=True, text=True
    )
    assert images[0].digest in listed.stdout


def test_docker_archive_loads_with_skopeo(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = iris_build
    archive = tmp_path / "iris.tar"
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    api.build(
        [str(directory / "iris-sklearn")],
        output=tmp_path / "out",
        platform="linux/amd64",
        docker_archive=archive,
    )
    copied = tmp_path / "copied"
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"docker-archive:{archive}", f"oci:{copied}:loaded"],
        check=True,
        capture_output=True,
    )
    inspected = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci:{copied}:loaded"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert inspected["config"]["User"] == "65532:65532"
    assert inspected["rootfs"]["diff_ids"][0].startswith("sha256:")


def test_rebuild_after_a_model_change_rebuilds_only_model_layers(
    iris_build: tuple[Path, list[BuiltImage]], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, images = iris_build
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    records = directory / "cache" / "layers"
    before = set(records.iterdir())
    example = directory / "iris-sklearn"
    again = images_of(api.build([str(example)], output=directory / "out"))
    assert [i.digest for i in again] == [i.digest for i in images]
    assert set(records.iterdir()) == before  # a no-op builds no layer
    model = example / "model.npz"
    original = model.read_bytes()
    try:
        model.write_bytes(original + b"\n")
        changed = images_of(api.build([str(example)], output=directory / "out2"))
        added = set(records.iterdir()) - before
        # the model files layer and the serving config (which records its digest); each
        # is the same for both platforms, so built once
        assert len(added) == 2
        assert changed[0].digest != images[0].digest
    finally:
        model.write_bytes(original)


def test_layer_records_keep_each_package_with_its_license(iris_build: tuple[Path, list[BuiltImage]]) -> None:
    directory, _ = iris_build
    lock = json.loads((directory / "iris-sklearn" / "omi.lock").read_text())
    inventory = {}
    for record in (directory / "cache" / "layers").glob("*.json"):
        for component in json.loads(record.read_text())["inventory"]:
            inventory[component["sha256"]] = component
    locked = lock["targets"]["cpu"]
    for platform in ("linux/amd64", "linux/arm64"):
        for kind, section in (("deb", "debian"), ("wheel", "wheels")):
            for package in locked[platform][section]:
                found = inventory[package["sha256"]]
                assert (found["kind"], found["name"], found["version"]) == (
                    kind,
                    package["name"],
                    package["version"],
                )
    debs = [c for c in inventory.values() if c["kind"] == "deb"]
    wheels = [c for c in inventory.values() if c["kind"] == "wheel"]
    # licences as found: a DEP-5 copyright file names them (37 of these 63 .debs; glibc, gcc,
    # krb5, python3.11 and base-files still ship free-form ones, recorded as none found);
    # and every wheel here declares its own in METADATA (numpy, grpcio, protobuf, typing-extensions)
    assert sum(bool(c["licenses"]) for c in debs) >= len(debs) * 0.5
    assert {tuple(c["licenses"]) for c in debs if c["name"] == "zlib1g"} == {("Zlib",)}
    assert wheels
    assert all(c["licenses"] for c in wheels)


def _copy_of_the_cache(directory: Path, tmp_path: Path, *folders: str) -> Path:
    """The session build's cache, only the folders named, copied under tmp_path."""
    cache = tmp_path / "cache"
    for folder in folders:
        shutil.copytree(directory / "cache" / folder, cache / folder)
    return cache


def test_rebuild_from_the_download_cache_gives_the_same_image(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers rebuilt from unpacked archives (one of them damaged) equal the cold build's."""
    directory, images = iris_build
    cache = _copy_of_the_cache(directory, tmp_path, "blobs", "unpacked")
    stored = max((cache / "unpacked").iterdir(), key=lambda p: p.stat().st_size)
    stored.write_bytes(stored.read_bytes()[:-1])
    monkeypatch.setenv("OMI_BUILD_CACHE", str(cache))
    again = images_of(api.build([str(copy_example(tmp_path))], output=tmp_path / "out", locked=True))
    assert [(i.platform, i.digest) for i in again] == [(i.platform, i.digest) for i in images]
    assert stored.stat().st_size > 0
    original = directory / "cache" / "unpacked"
    assert len(list((cache / "unpacked").iterdir())) == len(list(original.iterdir()))


def test_corrupt_cache_entry_is_reported_and_removed(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = iris_build
    cache = _copy_of_the_cache(directory, tmp_path, "blobs")
    monkeypatch.setenv("OMI_BUILD_CACHE", str(cache))
    example = copy_example(tmp_path)
    lock = json.loads((example / "omi.lock").read_text())
    libc = next(p for p in lock["targets"]["cpu"]["linux/amd64"]["debian"] if p["name"] == "libc6")
    blob = cache / "blobs" / "sha256" / libc["sha256"]
    blob.write_bytes(b"not a deb")
    with pytest.raises(FetchError, match=r"libc6 .* is corrupt"):
        api.build([str(example)], output=tmp_path / "out", platform="linux/amd64", locked=True)
    assert not blob.exists()
    assert not (tmp_path / "out" / "index.json").exists()


def test_wrong_hash_in_the_lock_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    example = copy_example(tmp_path)
    lock = json.loads((example / "omi.lock").read_text())
    wheel = next(w for w in lock["targets"]["cpu"]["linux/amd64"]["wheels"] if w["name"] == "protobuf")
    wheel["sha256"] = "0" * 64
    (example / "omi.lock").write_text(json.dumps(lock))
    with pytest.raises(FetchError, match=r"protobuf-.*\.whl: sha256 .* does not match"):
        api.build([str(example)], output=tmp_path / "out", platform="linux/amd64", locked=True)
    assert not (tmp_path / "out").exists()
    assert not [p for p in (tmp_path / "cache" / "blobs" / "sha256").iterdir() if atomic.is_temporary(p.name)]


def test_unreachable_mirror_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    example = copy_example(tmp_path)
    with pytest.raises(FetchError, match=r"cannot download http://127\.0\.0\.1:9/debian") as exc:
        api.lock([str(example)])
    assert "OMI_DEBIAN_MIRROR" in (exc.value.hint or "")


@pytest.mark.parametrize("timeout", [None, "1"])
def test_a_mirror_that_never_answers_fails_in_under_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout: str | None
) -> None:
    """It accepts connections and then stays silent: the default gives up in under a minute,
    OMI_NETWORK_TIMEOUT sooner, and the error names the mirror and what to check."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])  # held open, never answered

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMI_DEBIAN_MIRROR", f"http://127.0.0.1:{port}/debian")
    if timeout:
        monkeypatch.setenv("OMI_NETWORK_TIMEOUT", timeout)
    example = copy_example(tmp_path)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="did not answer within") as exc:
            api.lock([str(example)])
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    took = time.monotonic() - started
    assert took < (10 if timeout else 60)
    assert f"127.0.0.1:{port}" in str(exc.value)
    assert "OMI_NETWORK_TIMEOUT" in (exc.value.hint or "")


def _with(example: Path, old: str, new: str) -> None:
    manifest = example / "omi.yaml"
    manifest.write_text(manifest.read_text().replace(old, new))


def test_unknown_debian_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    example = copy_example(tmp_path)
    _with(example, "targets:", "system:\n  packages: [no-such-package-omi]\ntargets:")
    with pytest.raises(LockError, match=r"'no-such-package-omi' .* is not in the archive"):
        api.lock([str(example)])
    assert not (example / "omi.lock").read_text().count("no-such-package-omi")


def test_missing_wheel_for_the_platform_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    example = copy_example(tmp_path)
    _with(example, "    - numpy==2.4.6", "    - numpy==2.4.6\n    - pywin32==306")
    before = (example / "omi.lock").read_text()
    with pytest.raises(LockError, match="cannot resolve the Python requirements for linux/amd64") as exc:
        api.lock([str(example)])
    assert "pywin32" in str(exc.value)
    assert (example / "omi.lock").read_text() == before  # nothing half-written


def test_zstd_layers_build_and_read_back(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    directory, _ = iris_build
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    example = copy_example(tmp_path)
    _with(example, "  compression: gzip", "  compression: zstd")
    images = images_of(api.build([str(example)], output=tmp_path / "out", platform="linux/amd64"))
    manifest = json.loads(
        (images[0].layout / "blobs/sha256" / images[0].digest.removeprefix("sha256:")).read_text()
    )
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    assert serving_config(images[0].layout)["model"]["name"] == "iris-classifier"
    assert _skopeo_digest(images[0].layout) == images[0].digest


def test_an_unchanged_target_is_up_to_date_and_a_damaged_output_is_built_again(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second build answers without loading the pipeline; a blob removed from the output
    (or a model file touched) sends it through the pipeline, which restores the same layout."""
    from omi_build import build as pipeline  # noqa: PLC0415

    directory, images = iris_build
    cache = _copy_of_the_cache(directory, tmp_path, "blobs", "unpacked", "layers", "interpreters")
    monkeypatch.setenv("OMI_BUILD_CACHE", str(cache))
    example = copy_example(tmp_path)
    out = tmp_path / "out"
    first = images_of(api.build([str(example)], output=out, locked=True))
    real_run = pipeline.run

    def refuse(*_args: object, **_kwargs: object) -> object:
        msg = "the pipeline ran for an up-to-date target"
        raise AssertionError(msg)

    monkeypatch.setattr(pipeline, "run", refuse)
    assert images_of(api.build([str(example)], output=out, locked=True)) == first
    monkeypatch.setattr(pipeline, "run", real_run)
    layer = Layout.open(out).images()[0].layers[-1]
    (out / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).unlink()
    again = images_of(api.build([str(example)], output=out, locked=True))
    assert [i.digest for i in again] == [i.digest for i in first] == [i.digest for i in images]
    assert (out / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).is_file()
