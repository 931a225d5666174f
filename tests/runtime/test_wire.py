"""ModelInfer's wire codec: raw tensors as views of the received bytes, answers as protobuf
would write them, and every malformed message refused (DecodeError: INVALID_ARGUMENT)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from omi_build.runtime._wire import ResponseWriter, parse_request, stream_answer
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as pb
from omi_build.runtime.tensors import TensorSpec, from_raw

BIG = 1 << 18  # rows of 4 FP32: 4 MiB, well above the size where raw fields are scanned


def _request(rows: int) -> tuple[pb.ModelInferRequest, np.ndarray]:
    data = np.arange(rows * 4, dtype="<f4").reshape(rows, 4)
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="req-1")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    request.inputs.add(name="y", datatype="INT64", shape=[rows])
    request.outputs.add(name="out")
    request.raw_input_contents.append(data.tobytes())
    request.raw_input_contents.append(np.arange(rows, dtype="<i8").tobytes())
    return request, data


@pytest.mark.parametrize("rows", [1, BIG])
def test_a_request_parses_as_protobuf_does(rows: int) -> None:
    request, _ = _request(rows)
    parsed = parse_request(request.SerializeToString())
    assert [bytes(raw) for raw in parsed.raw] == list(request.raw_input_contents)
    expected = pb.ModelInferRequest()
    expected.CopyFrom(request)
    expected.ClearField("raw_input_contents")
    message = pb.ModelInferRequest()
    message.CopyFrom(parsed.message)
    message.ClearField("raw_input_contents")
    assert message == expected


def test_a_large_raw_tensor_is_a_view_of_the_received_bytes_not_a_copy() -> None:
    request, data = _request(BIG)
    wire = request.SerializeToString()
    parsed = parse_request(wire)
    spec = TensorSpec("x", "FP32", (-1, 4), (), None, "")
    array = from_raw(spec, [BIG, 4], parsed.raw[0])
    assert np.shares_memory(array, np.frombuffer(wire, dtype=np.uint8))
    assert not array.flags.writeable  # the model cannot write into the request
    np.testing.assert_array_equal(array, data)


def test_fields_in_any_order_and_split_messages_are_merged() -> None:
    request, _ = _request(BIG)
    head = pb.ModelInferRequest(model_name="m")
    rest = pb.ModelInferRequest(id="req-1")
    rest.inputs.add(name="x", datatype="FP32", shape=[BIG, 4])
    raw = pb.ModelInferRequest(raw_input_contents=list(request.raw_input_contents)[:1])
    # raw first, then the name, then more fields: protobuf merges them; so must we
    wire = raw.SerializeToString() + head.SerializeToString() + rest.SerializeToString()
    parsed = parse_request(wire)
    assert (parsed.message.model_name, parsed.message.id) == ("m", "req-1")
    assert (len(parsed.message.inputs), len(parsed.raw)) == (1, 1)
    assert bytes(parsed.raw[0]) == request.raw_input_contents[0]


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x3a\xff\xff\xff\xff\x0f", id="raw field longer than the message"),
        pytest.param(b"\x3a", id="raw field without a length"),
        pytest.param(b"\x38\x01", id="raw_input_contents as a varint"),
        pytest.param(b"\x0b", id="a group"),
        pytest.param(b"\x00\x01", id="field number 0"),
        pytest.param(b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", id="varint of 11 bytes"),
    ],
)
def test_malformed_messages_are_refused(tail: bytes) -> None:
    request, _ = _request(BIG)
    with pytest.raises(DecodeError):
        parse_request(request.SerializeToString() + tail)


def test_small_malformed_messages_are_refused_by_protobuf() -> None:
    with pytest.raises(DecodeError):
        parse_request(b"\x3a\x05ab")


@pytest.mark.parametrize("request_id", ["", "r-1", "\u00e9t\u00e9"])
def test_answers_are_what_protobuf_would_write(request_id: str) -> None:
    writer = ResponseWriter(
        "iris", "1.0.0", [("species", "INT64"), ("probabilities", "FP32"), ("s", "BYTES")]
    )
    species = np.array([0, 2], dtype="<i8")
    probabilities = np.arange(6, dtype="<f4").reshape(2, 3)
    for _ in range(2):  # the second time from the cached headers
        data = writer.write(
            request_id,
            [("species", (2,), species), ("probabilities", (2, 3), probabilities), ("s", (), b"\x01\0\0\0a")],
        )
        answer = pb.ModelInferResponse.FromString(data)
        assert (answer.model_name, answer.model_version, answer.id) == ("iris", "1.0.0", request_id)
        assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
            ("species", "INT64", [2]),
            ("probabilities", "FP32", [2, 3]),
            ("s", "BYTES", []),
        ]
        assert answer.raw_output_contents == [species.tobytes(), probabilities.tobytes(), b"\x01\0\0\0a"]
    wrapped = pb.ModelStreamInferResponse.FromString(stream_answer(data))
    assert wrapped.infer_response == answer
