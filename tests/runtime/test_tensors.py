"""The runtime's tensor codec and batcher, in-process (no sockets, no processes)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from omi_build.runtime._batcher import Batcher, ModelError
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as pb
from omi_build.runtime.tensors import (
    TensorError,
    TensorSpec,
    check_shape,
    conform_output,
    from_contents,
    from_raw,
    to_contents,
    to_raw,
)

FP32 = TensorSpec("x", "FP32", (-1, 2), (), None, "")
TEXT = TensorSpec("t", "BYTES", (-1,), (), 5, "")


def test_raw_round_trip_for_every_numeric_datatype() -> None:
    for datatype, dtype in (
        ("INT8", "<i1"),
        ("UINT64", "<u8"),
        ("FP16", "<f2"),
        ("FP64", "<f8"),
        ("BOOL", "?"),
    ):
        spec = TensorSpec("x", datatype, (-1, 2), (), None, "")
        array = np.arange(6).reshape(3, 2).astype(dtype)
        assert np.array_equal(from_raw(spec, [3, 2], to_raw(array, datatype)), array)


def test_bytes_are_length_prefixed_and_limited() -> None:
    raw = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + b"you"
    assert from_raw(TEXT, [2], raw).tolist() == [b"hi", b"you"]
    assert to_raw(from_raw(TEXT, [2], raw), "BYTES") == raw
    with pytest.raises(TensorError, match="truncated"):
        from_raw(TEXT, [2], raw[:-1])
    with pytest.raises(TensorError, match="ends early"):
        from_raw(TEXT, [3], raw)
    with pytest.raises(TensorError, match="follow the last"):
        from_raw(TEXT, [1], raw)
    with pytest.raises(TensorError, match="limit is 5"):
        from_raw(TEXT, [1], struct.pack("<I", 6) + b"sixsix")


def test_raw_size_must_match_the_shape() -> None:
    with pytest.raises(TensorError, match="needs 16 bytes of raw data, got 12"):
        from_raw(FP32, [2, 2], bytes(12))


def test_contents_in_the_right_field_only() -> None:
    contents = pb.InferTensorContents(fp32_contents=[1, 2, 3, 4])
    assert from_contents(FP32, [2, 2], contents).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(TensorError, match="holds 6 elements, got 4"):
        from_contents(FP32, [3, 2], contents)
    with pytest.raises(TensorError, match="came in int_contents"):
        from_contents(FP32, [2, 2], pb.InferTensorContents(int_contents=[1, 2, 3, 4]))
    out = pb.InferTensorContents()
    to_contents(np.array([[1.5, 2.5]], np.float32), "FP32", out)
    assert list(out.fp32_contents) == [1.5, 2.5]


@pytest.mark.parametrize(
    ("shape", "message"),
    [([2, 3], "has shape 2x3, but the model takes Nx2"), ([2], "has shape 2"), ([0, 2], "empty batch")],
)
def test_shapes(shape: list[int], message: str) -> None:
    with pytest.raises(TensorError, match=message):
        check_shape(FP32, shape)


def test_model_outputs_are_checked() -> None:
    assert conform_output(FP32, [[1, 2]], 1).dtype == np.float32
    with pytest.raises(ValueError, match="for a batch of 2"):
        conform_output(FP32, [[1, 2]], 2)


def _batcher(predict: Callable[[dict[str, np.ndarray]], Any], **options: int) -> Batcher:
    outputs = (TensorSpec("y", "FP32", (-1,), (), None, ""),)
    return Batcher(
        predict, outputs, max_batch_size=options.get("max_batch_size", 8), max_wait_ms=5, workers=1
    )


def test_concurrent_requests_share_one_predict_call_and_get_their_own_rows() -> None:
    calls: list[int] = []

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return {"y": inputs["x"].sum(axis=1)}

    async def scenario() -> list[list[float]]:
        batcher = _batcher(predict)
        batcher.start()
        try:
            requests = [np.full((rows, 2), rows, np.float32) for rows in (1, 2, 3)]
            answers = await asyncio.gather(*(batcher.predict({"x": r}, len(r)) for r in requests))
        finally:
            await batcher.stop()
        return [answer["y"].tolist() for answer in answers]

    assert asyncio.run(scenario()) == [[2.0], [4.0, 4.0], [6.0, 6.0, 6.0]]
    assert calls == [6]  # one call for all three (the model is slow until measured)


def test_a_failing_model_fails_its_requests_only() -> None:
    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["x"][0, 0] < 0:
            msg = "negative"
            raise RuntimeError(msg)
        return {"y": inputs["x"][:, 0]}

    async def scenario() -> tuple[str, list[float]]:
        batcher = _batcher(predict, max_batch_size=1)
        batcher.start()
        try:
            with pytest.raises(ModelError) as failed:
                await batcher.predict({"x": -np.ones((1, 2), np.float32)}, 1)
            good = await batcher.predict({"x": np.ones((1, 2), np.float32)}, 1)
        finally:
            await batcher.stop()
        return str(failed.value), good["y"].tolist()

    message, good = asyncio.run(scenario())
    assert message == "the model raised RuntimeError: negative"
    assert good == [1.0]
