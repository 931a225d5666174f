"""The generated server in a real OCI runtime, called by real gRPC clients."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from omi_build import api, engine
from omi_build.build import BuiltImage
from omi_build.cli import main
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc
from omi_build.runtime.protocol import health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc
from omi_build.runtime.protocol import model2_template_pb2 as omi
from omi_build.runtime.protocol import model2_template_pb2_grpc as omi_grpc
from tests.conftest import EXAMPLES

from .conftest import free_port

pytestmark = pytest.mark.integration
MODEL = "iris-classifier"


def _reference() -> Any:
    """scikit-learn's LogisticRegression with the committed model.npz's parameters: what the
    image must answer. (Retraining here would depend on this CPU's OpenBLAS kernel.)"""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - dev dependency only

    with np.load(EXAMPLES / "iris-sklearn" / "model.npz", allow_pickle=False) as parameters:
        estimator = LogisticRegression()
        estimator.coef_ = parameters["coef"]
        estimator.intercept_ = parameters["intercept"]
        estimator.classes_ = parameters["classes"]
        estimator.n_features_in_ = parameters["coef"].shape[1]
    return estimator


@pytest.fixture(scope="module")
def server(iris_build: tuple[Path, list[BuiltImage]]) -> Iterator[engine.Running]:
    _, images = iris_build
    running = engine.start(images[0].layout, port=free_port(), output=subprocess.DEVNULL)
    try:
        engine.wait_serving(running)
        yield running
    finally:
        running.stop()


@pytest.fixture
def channel(server: engine.Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


def _infer(channel: grpc.Channel, batch: np.ndarray, *, raw: bool = True) -> oip.ModelInferResponse:
    request = oip.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="measurements", datatype="FP32", shape=list(batch.shape))
    if raw:
        request.raw_input_contents.append(batch.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(batch.reshape(-1).tolist())
    response: oip.ModelInferResponse = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        request, timeout=10
    )
    return response


GRID = np.random.default_rng(11).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(300, 4)).astype(np.float32)


def test_oip_predictions_equal_scikit_learn_in_process(channel: grpc.Channel) -> None:
    reference = _reference().predict(GRID)
    raw = _infer(channel, GRID, raw=True)
    species = np.frombuffer(raw.raw_output_contents[0], dtype="<i8")
    assert species.tolist() == reference.tolist()
    contents = _infer(channel, GRID[:50], raw=False)
    assert list(contents.outputs[0].contents.int64_contents) == reference[:50].tolist()
    assert not contents.raw_output_contents  # answered in the form it was asked


def test_omi_run_equals_scikit_learn_in_process(channel: grpc.Channel) -> None:
    reference = _reference().predict(GRID[:20])
    stub = omi_grpc.ModzyModelStub(channel)
    assert stub.Status(omi.StatusRequest()).status_code == 200
    request = omi.RunRequest(
        inputs=[omi.InputItem(input={"measurements": json.dumps(row.tolist()).encode()}) for row in GRID[:20]]
    )
    response = stub.Run(request, timeout=10)
    assert response.status_code == 200
    assert [json.loads(item.output["species"]) for item in response.outputs] == reference.tolist()
    assert all(item.success for item in response.outputs)


def test_health_serving_and_reflection_lists_services(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "ModzyModel"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=service)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
    ]
    answers = list(reflection.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"inference.GRPCInferenceService", "ModzyModel", "grpc.health.v1.Health"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (
            lambda r: setattr(r.inputs[0], "name", "measurments"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown input 'measurments'",
        ),
        (
            lambda r: setattr(r.inputs[0], "datatype", "FP64"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "is FP64, but the model takes FP32",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(1, 3),
            grpc.StatusCode.INVALID_ARGUMENT,
            "has shape 2x3, but the model takes Nx4",
        ),
        (
            lambda r: r.raw_input_contents.__setitem__(0, r.raw_input_contents[0][:-3]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "needs 32 bytes",
        ),
        (
            lambda r: r.inputs[0].shape.__setitem__(0, 0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "empty batch",
        ),
        (
            lambda r: setattr(r, "model_name", "other"),
            grpc.StatusCode.NOT_FOUND,
            "no model 'other'",
        ),
        (
            lambda r: r.outputs.add(name="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output 'nope'",
        ),
    ],
)
def test_malformed_requests_get_the_right_status(
    channel: grpc.Channel, mutate: object, code: grpc.StatusCode, message: str
) -> None:
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="measurements", datatype="FP32", shape=[2, 4])
    request.raw_input_contents.append(np.ones((2, 4), "<f4").tobytes())
    mutate(request)  # type: ignore[operator]
    with pytest.raises(grpc.RpcError) as exc:
        oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert exc.value.code() == code
    assert message in (exc.value.details() or "")
    assert _infer(channel, GRID[:2]).outputs  # and it keeps serving


def test_oversized_message_is_resource_exhausted(channel: grpc.Channel) -> None:
    rows = (65 * 1024 * 1024) // 16
    with pytest.raises(grpc.RpcError) as exc:
        _infer(channel, np.zeros((rows, 4), np.float32))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _infer(channel, GRID[:2]).outputs


def test_omi_refuses_unknown_and_missing_keys(channel: grpc.Channel) -> None:
    stub = omi_grpc.ModzyModelStub(channel)
    unknown = stub.Run(omi.RunRequest(inputs=[omi.InputItem(input={"input": b"[1,2,3,4]"})]))
    assert (unknown.status_code, unknown.outputs) == (400, [])
    assert "unknown input(s) input" in unknown.message
    empty = stub.Run(omi.RunRequest())
    assert empty.status_code == 400
    explain = stub.Run(
        omi.RunRequest(inputs=[omi.InputItem(input={"measurements": b"[5.1, 3.5, 1.4, 0.2]"})], explain=True)
    )
    assert not explain.outputs[0].success
    assert b"no explain method" in explain.outputs[0].output["error"]


def test_a_thousand_concurrent_requests_do_not_crash_it(server: engine.Running) -> None:
    async def flood() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as aio_channel:
            stub = oip_grpc.GRPCInferenceServiceStub(aio_channel)

            async def one() -> grpc.StatusCode:
                request = oip.ModelInferRequest(model_name=MODEL)
                request.inputs.add(name="measurements", datatype="FP32", shape=[1, 4])
                request.raw_input_contents.append(GRID[:1].tobytes())
                try:
                    await stub.ModelInfer(request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            return await asyncio.gather(*(one() for _ in range(1000)))

    codes = asyncio.run(flood())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert codes.count(grpc.StatusCode.OK) >= 256
    assert server.process.poll() is None


TRITON_CLIENT = """
import json, sys, numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
x = np.array(json.loads(sys.argv[2]), dtype=np.float32)
tensor = g.InferInput("measurements", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer("iris-classifier", [tensor])
print(json.dumps({
    "live": client.is_server_live(), "ready": client.is_server_ready(),
    "metadata": client.get_model_metadata("iris-classifier", as_json=True),
    "species": result.as_numpy("species").tolist(),
}))
"""


def test_tritonclient_server_ready_metadata_and_infer(server: engine.Running, triton_python: Path) -> None:
    batch = GRID[:25]
    out = subprocess.run(
        [
            str(triton_python),
            "-c",
            TRITON_CLIENT,
            f"127.0.0.1:{server.port}",
            json.dumps(batch.tolist()),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(out.stdout)
    assert answer["live"] is True
    assert answer["ready"] is True
    assert answer["metadata"]["inputs"][0] == {
        "name": "measurements",
        "datatype": "FP32",
        "shape": ["-1", "4"],
    }
    assert answer["species"] == _reference().predict(batch).tolist()


CHASSIS_CLIENT = """
import asyncio, json, sys
from chassis.client import OMIClient
async def main():
    async with OMIClient("127.0.0.1", int(sys.argv[1])) as client:
        status = await client.status()
        items = [{"measurements": b"[5.1, 3.5, 1.4, 0.2]"}, {"measurements": b"[6.3, 3.3, 6.0, 2.5]"}]
        run = await client.run(items)
        print(json.dumps({"status": status.status_code, "run": run.status_code,
                          "species": [json.loads(o.output["species"]) for o in run.outputs]}))
asyncio.run(main())
"""


def test_chassis_omi_client_status_and_run(server: engine.Running, chassis_python: Path) -> None:
    out = subprocess.run(
        [str(chassis_python), "-c", CHASSIS_CLIENT, str(server.port)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == {"status": 200, "run": 200, "species": [0, 2]}


def test_omi_build_test_passes_every_example(
    iris_build: tuple[Path, list[BuiltImage]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, images = iris_build
    assert main(["test", str(images[0].layout)]) == 0
    table = capsys.readouterr().out
    assert table.count("PASS") == 3
    assert "3 passed, 0 failed" in table


def test_sigterm_and_omi_shutdown_drain_and_exit_zero(
    iris_build: tuple[Path, list[BuiltImage]],
) -> None:
    _, images = iris_build
    first = engine.start(images[0].layout, port=free_port(), output=subprocess.DEVNULL)
    engine.wait_serving(first)
    assert first.stop() == 0
    second = engine.start(images[0].layout, port=free_port(), output=subprocess.DEVNULL)
    try:
        engine.wait_serving(second)
        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as opened:
            assert omi_grpc.ModzyModelStub(opened).Shutdown(omi.ShutdownRequest()).status_code == 200
        assert second.process.wait(timeout=30) == 0
    finally:
        second.stop()


STREAM_CLIENT = """
import queue, sys, json, numpy as np, tritonclient.grpc as g
client = g.InferenceServerClient(sys.argv[1])
results = queue.Queue()
client.start_stream(callback=lambda result, error: results.put((result, error)))
for text in [b"one two three", b"four five"]:
    tensor = g.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([text], dtype=object))
    client.async_stream_infer("word-stream", [tensor], request_id=text.decode())
got = []
for _ in range(5):
    result, error = results.get(timeout=30)
    assert error is None, error
    token, position = result.as_numpy("token")[0].decode(), int(result.as_numpy("position")[0])
    got.append([result.get_response().id, token, position])
client.stop_stream()
print(json.dumps(got))
"""


def test_streaming_model_answers_tritonclient_with_several_responses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    triton_python: Path,
    iris_build: tuple[Path, list[BuiltImage]],
) -> None:
    directory, _ = iris_build
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))  # its base layers are iris's
    built = api.build([str(EXAMPLES / "text-stream")], output=tmp_path / "out")
    with engine.start(built[0].layout, port=free_port(), output=subprocess.DEVNULL) as running:
        engine.wait_serving(running)
        out = subprocess.run(
            [str(triton_python), "-c", STREAM_CLIENT, f"127.0.0.1:{running.port}"],
            check=True,
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert json.loads(out.stdout) == [
        ["one two three", "one", 0],
        ["one two three", "two", 1],
        ["one two three", "three", 2],
        ["four five", "four", 0],
        ["four five", "five", 1],
    ]


def _listeners(port: int) -> list[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6, no tools needed)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_omi_build_run_stops_cleanly_on_a_signal(
    iris_build: tuple[Path, list[BuiltImage]], signum: signal.Signals
) -> None:
    """Ctrl-C, a supervisor's SIGTERM or a closed terminal's SIGHUP: drained, and no container,
    bundle or listening port is left; while it serves, it listens on 127.0.0.1 only."""
    _, images = iris_build
    port = free_port()
    before = set(
        subprocess.run(["runc", "list", "-q"], capture_output=True, text=True, check=True).stdout.split()
    )
    bundles_before = set(Path(tempfile.gettempdir()).glob("omi-run-*"))
    process = subprocess.Popen(
        [sys.executable, "-m", "omi_build", "run", str(images[0].layout), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
            health = health_pb2_grpc.HealthStub(opened)
            while time.monotonic() < deadline:
                try:
                    if (
                        health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    time.sleep(0.1)
        # 127.0.0.1 (gRPC may list it as ::ffff:127.0.0.1), never 0.0.0.0 or [::]
        assert _listeners(port)
        assert set(_listeners(port)) <= {"0100007F", "0000000000000000FFFF00000100007F"}
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0, output
    assert '"event": "stopped"' in output
    after = set(
        subprocess.run(["runc", "list", "-q"], capture_output=True, text=True, check=True).stdout.split()
    )
    assert after == before  # its container is gone
    assert set(Path(tempfile.gettempdir()).glob("omi-run-*")) == bundles_before  # and its bundle
    assert _listeners(port) == []


def test_the_served_process_holds_no_capability_and_is_filtered(server: engine.Running) -> None:
    state = subprocess.run(["runc", "state", server.name], capture_output=True, text=True, check=True)
    pid = json.loads(state.stdout)["pid"]
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[field].strip(), 16) == 0, (field, status[field])
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a filter is installed
    assert status["Uid"].split()[0] == "65532"
