"""A request header checked once: requests whose bytes before their raw tensors are the same
reuse what checking it found, and nothing else does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import grpc
import numpy as np
import pytest

from omi_build.runtime._limits import Rejected
from omi_build.runtime._model import Config
from omi_build.runtime._oip import InferenceService
from omi_build.runtime._wire import parse_request
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as pb
from omi_build.runtime.tensors import TensorSpec

X = TensorSpec("x", "FP32", (-1, 4), (), None, "")
N = TensorSpec("n", "INT64", (-1,), (), None, "")
Y = TensorSpec("y", "FP32", (-1,), (), None, "")


def _service(*inputs: TensorSpec) -> InferenceService:
    serving: dict[str, Any] = {"max_message_bytes": 1 << 20}
    config = SimpleNamespace(
        name="m", version="1", inputs=inputs or (X, N), outputs=(Y,), serving=serving, raw={}
    )
    return InferenceService(cast("Config", config), SimpleNamespace(), "1")


def _wire(x: np.ndarray, n: np.ndarray, **fields: Any) -> bytes:
    request = pb.ModelInferRequest(model_name="m", **fields)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.inputs.add(name="n", datatype="INT64", shape=list(n.shape))
    request.raw_input_contents.extend([x.astype("<f4").tobytes(), n.astype("<i8").tobytes()])
    return request.SerializeToString()


def test_requests_with_one_header_are_checked_once_and_each_gets_its_own_tensors() -> None:
    service = _service()
    for value in range(5):
        x, n = np.full((2, 4), value, np.float32), np.array([value, -value])
        request = parse_request(_wire(x, n))
        assert request.header is not None
        arrays, rows, wanted = service.decode(request)
        assert rows == 2
        assert wanted == ["y"]
        np.testing.assert_array_equal(arrays["x"], x)
        np.testing.assert_array_equal(arrays["n"], n)
    assert len(service._checked) == 1  # one header, checked once


def test_a_request_whose_tensors_are_not_the_checked_sizes_is_checked_in_full() -> None:
    service = _service()
    x, n = np.zeros((2, 4), np.float32), np.zeros(2, np.int64)
    service.decode(parse_request(_wire(x, n)))
    request = pb.ModelInferRequest.FromString(_wire(x, n))
    request.raw_input_contents[1] = b"\0" * 8  # one INT64 where the shape says two
    with pytest.raises(Rejected) as refused:
        service.decode(parse_request(request.SerializeToString()))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 16 bytes" in str(refused.value)
    del request.raw_input_contents[1]  # one raw tensor for two inputs
    with pytest.raises(Rejected, match="1 raw_input_contents for 2 inputs"):
        service.decode(parse_request(request.SerializeToString()))


def test_no_header_for_an_id_for_typed_contents_or_for_raw_tensors_that_are_not_last() -> None:
    x, n = np.zeros((1, 4), np.float32), np.zeros(1, np.int64)
    assert parse_request(_wire(x, n, id="r-1")).header is None  # each id would be a header
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0] * 4)
    assert parse_request(typed.SerializeToString()).header is None
    # the raw tensors first, the rest after: a valid message, with no header to share
    raw_first = pb.ModelInferRequest(raw_input_contents=[x.tobytes(), n.tobytes()]).SerializeToString()
    rest = pb.ModelInferRequest.FromString(_wire(x, n))
    rest.ClearField("raw_input_contents")
    wire = raw_first + rest.SerializeToString()
    request = parse_request(wire)
    assert request.header is None or not request.header.endswith(rest.SerializeToString())
    service = _service()
    arrays, _, _ = service.decode(request)
    np.testing.assert_array_equal(arrays["x"], x)
    assert not service._checked  # bytes that hold a raw tensor are never a header


def test_a_header_that_would_differ_in_meaning_never_matches() -> None:
    """Same header bytes always mean the same fields: another model name, shape or output
    asked for is other bytes, checked on its own (and refused where wrong)."""
    service = _service()
    x, n = np.zeros((1, 4), np.float32), np.zeros(1, np.int64)
    service.decode(parse_request(_wire(x, n)))
    other = pb.ModelInferRequest.FromString(_wire(x, n))
    other.model_name = "other"
    with pytest.raises(Rejected, match="no model 'other'"):
        service.decode(parse_request(other.SerializeToString()))
    unknown = pb.ModelInferRequest.FromString(_wire(x, n))
    unknown.outputs.add(name="z")
    with pytest.raises(Rejected, match="unknown output 'z'"):
        service.decode(parse_request(unknown.SerializeToString()))
    assert len(service._checked) == 1  # refusals are never remembered


def test_the_checked_headers_are_bounded() -> None:
    service = _service()
    for rows in range(1, 1100):  # every batch size is another header
        service.decode(parse_request(_wire(np.zeros((rows, 4), np.float32), np.zeros(rows, np.int64))))
        assert len(service._checked) <= 1024


def test_a_long_header_is_checked_every_time_not_remembered() -> None:
    """A client cannot make the server keep big headers: a parameters map of some KiB makes
    a valid request whose header is never remembered."""
    service = _service()
    x, n = np.zeros((1, 4), np.float32), np.zeros(1, np.int64)
    request = pb.ModelInferRequest.FromString(_wire(x, n))
    request.parameters["note"].string_param = "x" * 4000
    parsed = parse_request(request.SerializeToString())
    assert parsed.header is None
    arrays, _, _ = service.decode(parsed)
    np.testing.assert_array_equal(arrays["x"], x)
    assert not service._checked
