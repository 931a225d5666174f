"""`omi-build test`: comparing outputs, and the requests it sends, against a fake channel."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from omi_build import examples
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import model2_template_pb2 as omi

CONFIG: dict[str, Any] = {
    "model": {
        "name": "doubler",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    },
    "serving": {"protocols": ["omi-v1", "oip-v2"]},
}
EXAMPLE: dict[str, Any] = {
    "name": "e",
    "inputs": {"x": [[1.0, 2.0], [3.0, 4.0]]},
    "outputs": {"y": [[2.0, 4.0], [6.0, 8.0]]},
}


class _Channel:
    """Answers each unary call with `handler(method, request)`, as a grpc channel's stub sees it."""

    def __init__(self, handler: Callable[[str, Any], Any]) -> None:
        self.handler = handler
        self.seen: list[tuple[str, Any]] = []

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    **_: Any) -> Callable[..., Any]:  # fmt: skip
        def call(request: Any, timeout: float | None = None) -> Any:
            assert timeout is not None  # never a call without a deadline
            wire = request_serializer(request)  # what would go over the wire, really encoded
            self.seen.append((method, request))
            return response_deserializer(self.handler(method, wire))

        return call

    def _unused(self, *_: Any, **__: Any) -> Callable[..., Any]:
        return lambda *_, **__: pytest.fail("only unary calls are expected")

    unary_stream = stream_unary = stream_stream = _unused


def _doubling_server(method: str, wire: bytes) -> bytes:
    if method.endswith("/ModelInfer"):
        request = oip.ModelInferRequest.FromString(wire)
        if request.raw_input_contents:
            x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(
                request.inputs[0].shape
            )
            response = oip.ModelInferResponse(model_name="doubler", raw_output_contents=[(x * 2).tobytes()])
        else:
            x = np.asarray(request.inputs[0].contents.fp32_contents, dtype=np.float32)
            response = oip.ModelInferResponse(model_name="doubler")
        tensor = response.outputs.add(name="y", datatype="FP32", shape=list(request.inputs[0].shape))
        if not request.raw_input_contents:
            tensor.contents.fp32_contents.extend((x * 2).tolist())
        return response.SerializeToString()
    run = omi.RunRequest.FromString(wire)
    answer = omi.RunResponse(status_code=200)
    for item in run.inputs:
        row = json.loads(item.input["x"])
        answer.outputs.add(success=True).output["y"] = json.dumps([v * 2 for v in row]).encode()
    return answer.SerializeToString()


@pytest.mark.parametrize("raw", [False, True])
def test_oip_sends_the_example_and_reads_the_answer_both_ways(raw: bool) -> None:
    channel = _Channel(_doubling_server)
    outputs = examples.via_oip(channel, CONFIG, EXAMPLE, raw=raw)
    assert examples.compare(EXAMPLE["outputs"]["y"], outputs["y"], "FP32", 1e-6) is None
    ((method, request),) = channel.seen
    assert method == "/inference.GRPCInferenceService/ModelInfer"
    assert bool(request.raw_input_contents) is raw


def test_omi_sends_one_item_per_row() -> None:
    channel = _Channel(_doubling_server)
    outputs = examples.via_omi(channel, CONFIG, EXAMPLE)
    assert outputs["y"].tolist() == [[2.0, 4.0], [6.0, 8.0]]
    assert len(channel.seen[0][1].inputs) == 2


def test_a_failed_omi_answer_is_an_error_naming_its_status() -> None:
    def failing(_: str, __: bytes) -> bytes:
        answer = omi.RunResponse(status_code=500, message="model error")
        answer.outputs.add(success=False).output["error"] = b"boom"
        return answer.SerializeToString()

    with pytest.raises(ValueError, match="status 500: model error boom"):
        examples.via_omi(_Channel(failing), CONFIG, EXAMPLE)


def test_compare_is_exact_for_integers_and_text_and_within_tolerance_for_floats() -> None:
    floats = np.asarray([1.0, 2.0005], dtype=np.float32)
    assert examples.compare([1.0, 2.0], floats, "FP32", 1e-3) is None
    assert "differs by 0.0005" in (examples.compare([1.0, 2.0], floats, "FP32", 1e-4) or "")
    assert examples.compare([1, 2], np.asarray([1, 2], dtype=np.int64), "INT64", 0.5) is None
    assert examples.compare([1, 2], np.asarray([1, 3], dtype=np.int64), "INT64", 5.0) == "[1, 3] != [1, 2]"
    text = np.asarray([b"setosa"], dtype=object)
    assert examples.compare(["setosa"], text, "BYTES", 0) is None
    assert examples.compare(["virginica"], text, "BYTES", 0) is not None
    assert examples.compare([[1.0, 2.0]], floats, "FP32", 1) == "shape [2], expected [1, 2]"
