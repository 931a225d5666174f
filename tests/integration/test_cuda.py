"""The CUDA example, built for real without a GPU: its image takes CUDA from NVIDIA's wheels
(each heavy one a layer of its own), sets what GPU runtimes read, records the CUDA version,
compiles its kernel with the wheel's NVRTC, and with no GPU says so and answers on the CPU."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from omi_build import api, engine
from omi_build.build import BuiltTarget
from omi_build.image import Layout
from tests.conftest import EXAMPLES

from .conftest import free_port, run_in_runc

pytestmark = pytest.mark.integration

SITE = "/usr/lib/python3/dist-packages"


@pytest.fixture(scope="module")
def cuda_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltTarget]:
    """Both targets of the example from one manifest, with a cache of their own."""
    directory = tmp_path_factory.mktemp("cuda")
    example = directory / "iris-cuda"
    shutil.copytree(EXAMPLES / "iris-cuda", example, ignore=shutil.ignore_patterns("omi-out", "__pycache__"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
        built = api.build([str(example)], output=directory / "out", locked=True)
    return {target.target: target for target in built}


def _image(target: BuiltTarget) -> tuple[dict[str, object], dict[str, object], list[str]]:
    layout = Layout.open(target.layout)
    manifest = json.loads(layout.blob(target.images[0].digest))
    config = json.loads(layout.blob(manifest["config"]["digest"]))
    history = [h["created_by"].removeprefix("omi-build: ") for h in config["history"]]
    return manifest, config["config"], history


def test_the_cuda_image_carries_cudas_libraries_environment_and_annotations(
    cuda_build: dict[str, BuiltTarget],
) -> None:
    manifest, config, history = _image(cuda_build["cuda"])
    env = dict(item.split("=", 1) for item in config["Env"])  # type: ignore[attr-defined]
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=12.4"
    assert env["LD_LIBRARY_PATH"].split(":") == [
        f"{SITE}/nvidia/cuda_nvrtc/lib", f"{SITE}/nvidia/cuda_runtime/lib", "/usr/local/nvidia/lib64",
    ]  # fmt: skip
    for recorded in (manifest["annotations"], config["Labels"]):
        assert recorded["ml.openmodel.accelerator"] == "cuda"  # type: ignore[index]
        assert recorded["ml.openmodel.cuda"] == "12.4"  # type: ignore[index]
    assert "nvidia-cuda-nvrtc-cu12" in history  # the heavy wheel is a layer of its own
    # the CPU image of the same manifest has none of it, and shares every layer but the
    # CUDA wheels' and the serving config's
    cpu_manifest, cpu_config, _ = _image(cuda_build["cpu"])
    assert not [e for e in cpu_config["Env"] if e.startswith(("NVIDIA_", "LD_LIBRARY_PATH"))]  # type: ignore[attr-defined]
    assert cpu_config["Labels"]["ml.openmodel.accelerator"] == "cpu"  # type: ignore[index]
    shared = {layer["digest"] for layer in cpu_manifest["layers"]} & {  # type: ignore[attr-defined]
        layer["digest"]
        for layer in manifest["layers"]  # type: ignore[attr-defined]
    }
    assert len(shared) >= 4  # base, numpy, runtime, model files


def test_the_wheels_nvrtc_compiles_the_kernel_inside_the_image(
    cuda_build: dict[str, BuiltTarget], tmp_path: Path
) -> None:
    """NVRTC needs no GPU: found through the image's own LD_LIBRARY_PATH, as the model loads it."""
    target = cuda_build["cuda"]
    ref = engine._resolve_ref(target.layout, "amd64")
    script = (
        "import ctypes, sys; sys.path.insert(0, '/opt/omi/model'); import model; "
        "nvrtc = ctypes.CDLL('libnvrtc.so.12'); p = ctypes.c_void_p(); "
        "assert nvrtc.nvrtcCreateProgram(ctypes.byref(p), model.KERNEL, b'k.cu', 0, None, None) == 0; "
        "assert nvrtc.nvrtcCompileProgram(p, 0, None) == 0; n = ctypes.c_size_t(); "
        "nvrtc.nvrtcGetPTXSize(p, ctypes.byref(n)); ptx = ctypes.create_string_buffer(n.value); "
        "nvrtc.nvrtcGetPTX(p, ptx); print(ptx.value.decode())"
    )
    result = run_in_runc(target.layout, ref, ["/usr/bin/python3.11", "-I", "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    assert ".visible .entry scores(" in result.stdout


def test_without_a_gpu_the_cuda_image_says_so_and_answers_its_examples(
    cuda_build: dict[str, BuiltTarget],
) -> None:
    with tempfile.TemporaryFile() as log:
        outcomes = api.run_examples(str(cuda_build["cuda"].layout), port=free_port(), log=log)
        log.seek(0)
        events = [json.loads(line) for line in log.read().decode().splitlines() if line.startswith("{")]
    assert outcomes
    assert all(o.passed for o in outcomes), [o for o in outcomes if not o.passed]
    warning = next(e for e in events if e["event"] == "no_gpu")
    assert warning["level"] == "warning"
    assert "built for CUDA 12.4 but has no GPU" in warning["message"]
    assert "libcuda.so.1" in warning["message"]
