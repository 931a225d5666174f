"""CUDA targets: which CUDA a wheel carries, the lock's check of it, what a CUDA image sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from omi_build import image, lock, serving_config
from omi_build.errors import LockError
from omi_build.layers import Blob, Entry, Facts, Layer
from omi_build.lock import Wheel, _cuda
from omi_build.manifest import load
from tests.conftest import EXAMPLES

SITE = "usr/lib/python3/dist-packages"


def _wheel(name: str, version: str) -> Wheel:
    return Wheel(name=name, version=version, filename=f"{name}.whl", sha256="0" * 64, size=1)


@pytest.mark.parametrize(
    ("name", "version", "cuda"),
    [
        ("nvidia-cuda-runtime-cu12", "12.4.127", "12.4"),  # CUDA 12: the suffix, and the version
        ("nvidia-cuda-runtime", "13.0.96", "13.0"),  # CUDA 13: no suffix, the version says it
        ("nvidia-cublas", "13.1.0.3", "13.1"),
        ("nvidia-cudnn-cu12", "9.1.0.70", "12"),  # cuDNN's own version says nothing of CUDA
        ("nvidia-cudnn-cu13", "9.13.0.50", "13"),
        ("nvidia-nccl-cu12", "2.21.5", "12"),
        ("cupy-cuda12x", "13.3.0", "12"),
        ("nvidia_cuda_nvrtc_cu12", "12.4.127", "12.4"),  # spelled as a file name
    ],
)
def test_the_cuda_a_wheel_carries(name: str, version: str, cuda: str) -> None:
    found = _cuda.classify(_wheel(name, version))
    assert found is not None
    assert found.cuda == cuda


@pytest.mark.parametrize("name", ["numpy", "nvidia-ml-py", "nvidia-cufft", "cuda-python", "torch"])
def test_wheels_that_say_nothing_of_cuda(name: str) -> None:
    assert _cuda.classify(_wheel(name, "12.4.0")) is None


def test_mismatches_name_the_wheel_and_the_requirement_that_fits() -> None:
    wheels = [
        _wheel("nvidia-cuda-runtime", "13.0.96"),
        _wheel("nvidia-cudnn-cu13", "9.13.0.50"),
        _wheel("nvidia-cuda-nvrtc-cu12", "12.6.85"),
        _wheel("nvidia-cuda-cupti-cu12", "12.4.127"),
        _wheel("numpy", "2.4.6"),
    ]
    found = {m.found.wheel.name: m for m in _cuda.mismatches("12.4", wheels)}
    assert set(found) == {"nvidia-cuda-runtime", "nvidia-cudnn-cu13", "nvidia-cuda-nvrtc-cu12"}
    assert found["nvidia-cuda-runtime"].instead == "nvidia-cuda-runtime-cu12==12.4.*"
    assert found["nvidia-cudnn-cu13"].instead == "nvidia-cudnn-cu12"
    assert "newer than 12.4" in found["nvidia-cuda-nvrtc-cu12"].reason
    assert _cuda.counterpart("nvidia-cuda-runtime", 13, 0) == "nvidia-cuda-runtime==13.0.*"
    assert _cuda.mismatches("12", [_wheel("nvidia-cuda-runtime-cu12", "12.0.107")]) == []


def _cuda_manifest(tmp_path: Path, cuda: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    text = (EXAMPLES / "iris-cuda" / "omi.yaml").read_text(encoding="utf-8")
    (tmp_path / "omi.yaml").write_text(text.replace('cuda: "12.4"', f'cuda: "{cuda}"'), encoding="utf-8")
    for name in ("model.py", "model.npz"):
        (tmp_path / name).write_bytes((EXAMPLES / "iris-cuda" / name).read_bytes())
    return tmp_path


def test_the_lock_refuses_wheels_for_another_cuda_naming_what_would_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = load(_cuda_manifest(tmp_path, "13.0"))
    asked: list[str] = []

    def resolve(requirements: list[str], **_: object) -> list[Wheel]:
        asked.extend(requirements)
        return [_wheel("nvidia-cuda-runtime", "13.0.96")]

    monkeypatch.setattr(lock._wheels, "resolve", resolve)
    wheels = [_wheel("nvidia-cuda-runtime-cu12", "12.4.127"), _wheel("numpy", "2.4.6")]
    with pytest.raises(LockError) as failure:
        lock.check_cuda(manifest, "cuda", "linux/amd64", wheels)
    message = str(failure.value)
    assert "targets.cuda declares CUDA 13.0" in message
    assert "nvidia-cuda-runtime-cu12 12.4.127 is built for CUDA 12" in message
    assert "nvidia-cuda-runtime==13.0.96 would work" in message
    assert asked == ["nvidia-cuda-runtime==13.0.*"]
    assert 'targets.cuda.cuda: "12.4"' in (failure.value.hint or "")


def test_the_lock_refuses_a_cuda_target_without_cuda_wheels(tmp_path: Path) -> None:
    manifest = load(_cuda_manifest(tmp_path, "12.4"))
    with pytest.raises(LockError, match="none of its wheels carries CUDA libraries") as failure:
        lock.check_cuda(manifest, "cuda", "linux/amd64", [_wheel("numpy", "2.4.6")])
    assert "nvidia-cuda-runtime-cu12==12.4.*" in (failure.value.hint or "")
    lock.check_cuda(manifest, "cuda", "linux/amd64", [_wheel("nvidia-cuda-runtime-cu12", "12.4.127")])


def test_only_a_cuda_targets_version_enters_the_locks_inputs(tmp_path: Path) -> None:
    before = lock.inputs_digest(load(_cuda_manifest(tmp_path / "a", "12.4")))
    after = lock.inputs_digest(load(_cuda_manifest(tmp_path / "b", "12.6")))
    assert before != after  # a new CUDA version re-resolves
    iris = load(EXAMPLES / "iris-sklearn")
    assert lock.read(iris).inputs == lock.inputs_digest(iris)  # a CPU target's lock is still current


def test_the_example_lock_holds_cuda_12_4_wheels_for_its_cuda_target() -> None:
    manifest = load(EXAMPLES / "iris-cuda")
    current = lock.check(manifest)
    wheels = current.platform("cuda", "linux/amd64").wheels
    assert {w.name for w in wheels} >= {"nvidia-cuda-runtime-cu12", "nvidia-cuda-nvrtc-cu12"}
    assert not _cuda.cuda_wheels(current.platform("cpu", "linux/amd64").wheels)  # per-target requirements
    lock.check_cuda(manifest, "cuda", "linux/amd64", list(wheels))


def _entries(*paths: str) -> list[Entry]:
    return [Entry(path=p, data=b"\x7fELF") for p in paths]


def test_a_layer_records_the_nvidia_library_folders_of_both_layouts() -> None:
    facts = Facts.of(
        _entries(
            f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12",
            f"{SITE}/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
            f"{SITE}/nvidia/cu13/lib/libcudart.so.13",
            f"{SITE}/nvidia/cuda_runtime/include/cuda.h",  # not a library
            f"{SITE}/nvidia/cuda_runtime/lib/__init__.py",
            f"{SITE}/numpy/core/_multiarray_umath.so",  # not NVIDIA's
        )
    )
    assert facts.libraries == (
        f"{SITE}/nvidia/cu13/lib",
        f"{SITE}/nvidia/cuda_nvrtc/lib",
        f"{SITE}/nvidia/cuda_runtime/lib",
    )
    assert Facts.from_json(facts.to_json()) == facts


def _layer(facts: Facts) -> Layer:
    blob = Blob(
        digest="sha256:" + "1" * 64, diff_id="sha256:" + "2" * 64, size=1, uncompressed_size=1,
        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
    )  # fmt: skip
    return Layer(name="nvidia", blob=blob, inventory=(), facts=facts)


def test_a_cuda_image_sets_what_gpu_runtimes_read_and_a_cpu_image_does_not() -> None:
    import json  # noqa: PLC0415

    manifest = load(EXAMPLES / "iris-cuda")
    layers = [_layer(Facts(libraries=(f"{SITE}/nvidia/cuda_runtime/lib",)))]
    built = image.assemble(
        manifest, "linux/amd64", layers, python="3.11", epoch=0, entry_args=[], target="cuda"
    )
    config = json.loads(built.config)["config"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in config["Env"]
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in config["Env"]
    assert "NVIDIA_REQUIRE_CUDA=cuda>=12.4" in config["Env"]
    assert f"LD_LIBRARY_PATH=/{SITE}/nvidia/cuda_runtime/lib:/usr/local/nvidia/lib64" in config["Env"]
    assert config["Labels"]["ml.openmodel.accelerator"] == "cuda"
    assert config["Labels"]["ml.openmodel.cuda"] == "12.4"
    assert json.loads(built.manifest)["annotations"]["ml.openmodel.cuda"] == "12.4"
    cpu = image.assemble(manifest, "linux/amd64", layers, python="3.11", epoch=0, entry_args=[], target="cpu")
    cpu_config = json.loads(cpu.config)["config"]
    assert not [e for e in cpu_config["Env"] if e.startswith(("NVIDIA_", "LD_LIBRARY_PATH"))]
    assert cpu_config["Labels"]["ml.openmodel.accelerator"] == "cpu"
    assert "ml.openmodel.cuda" not in cpu_config["Labels"]


def test_the_serving_config_tells_the_runtime_the_targets_device() -> None:
    manifest = load(EXAMPLES / "iris-cuda")
    cuda = serving_config.of(manifest, {}, model_dir="/opt/omi/model", target="cuda")
    assert cuda["device"] == {"accelerator": "cuda", "cuda": "12.4"}
    cpu = serving_config.of(manifest, {}, model_dir="/opt/omi/model", target="cpu")
    assert cpu["device"] == {"accelerator": "cpu", "cuda": None}
