"""Open Inference Protocol v2 tensors <-> numpy, checked against the declared interface.

Every check happens before the model is called, and every failure says what was wrong in the
client's terms: which input, what was expected, what came.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor of the model's interface, as the serving config declares it."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    media_types: tuple[str, ...]
    max_bytes: int | None
    description: str


DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
# Which InferTensorContents field carries each datatype (FP16 travels raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class TensorError(ValueError):
    """A request tensor that does not fit the declared interface (INVALID_ARGUMENT)."""


def check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    declared = spec.shape
    fits = len(shape) == len(declared)
    if fits:
        for want, got in zip(declared, shape, strict=True):
            if got < 0:
                msg = f"input '{spec.name}' has a negative dimension in shape {list(shape)}"
                raise TensorError(msg)
            if want not in (-1, got):
                fits = False
    if not fits:
        shown = "x".join(str(d) for d in shape) or "a scalar"
        wanted = "x".join("N" if d == -1 else str(d) for d in declared)
        msg = f"input '{spec.name}' has shape {shown}, but the model takes {wanted}"
        raise TensorError(msg)
    if shape and shape[0] == 0:
        msg = f"input '{spec.name}' is an empty batch; send at least one item"
        raise TensorError(msg)


def _split_bytes(spec: TensorSpec, raw: bytes | memoryview, count: int) -> list[bytes]:
    items: list[bytes] = []
    position = 0
    for _ in range(count):
        if position + 4 > len(raw):
            msg = f"input '{spec.name}': raw BYTES data ends early ({len(items)} of {count} elements)"
            raise TensorError(msg)
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            msg = f"input '{spec.name}': raw BYTES element {len(items)} is truncated"
            raise TensorError(msg)
        items.append(bytes(raw[position : position + length]))
        position += length
    if position != len(raw):
        extra = len(raw) - position
        msg = f"input '{spec.name}': {extra} bytes of raw data follow the last of {count} elements"
        raise TensorError(msg)
    return items


def _check_bytes_sizes(spec: TensorSpec, items: Sequence[bytes]) -> None:
    if spec.max_bytes is not None:
        for index, item in enumerate(items):
            if len(item) > spec.max_bytes:
                msg = (
                    f"input '{spec.name}' element {index} has {len(item)} bytes; "
                    f"the limit is {spec.max_bytes}"
                )
                raise TensorError(msg)


def from_raw(spec: TensorSpec, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray:
    """The tensor as a read-only view over `raw` (no copy); BYTES elements as bytes objects."""
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        items = _split_bytes(spec, raw, count)
        _check_bytes_sizes(spec, items)
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = DTYPES[spec.datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        msg = (
            f"input '{spec.name}': shape {list(shape)} of {spec.datatype} needs {expected} bytes "
            f"of raw data, got {len(raw)}"
        )
        raise TensorError(msg)
    return np.ndarray(tuple(shape), dtype, raw)  # a view: one numpy call, no copy


def from_contents(spec: TensorSpec, shape: Sequence[int], contents: Any) -> np.ndarray:
    field = CONTENTS_FIELD.get(spec.datatype)
    if field is None:
        msg = f"input '{spec.name}': {spec.datatype} travels in raw_input_contents only"
        raise TensorError(msg)
    for other in set(CONTENTS_FIELD.values()) - {field}:
        if len(getattr(contents, other)):
            msg = f"input '{spec.name}' is {spec.datatype}, but the data came in {other}"
            raise TensorError(msg)
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        msg = f"input '{spec.name}': shape {list(shape)} holds {count} elements, got {len(values)}"
        raise TensorError(msg)
    if spec.datatype == "BYTES":
        items = list(values)
        _check_bytes_sizes(spec, items)
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = DTYPES[spec.datatype]
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        msg = f"input '{spec.name}': a value does not fit {spec.datatype}"
        raise TensorError(msg) from exc


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()


def to_contents(array: np.ndarray, datatype: str, contents: Any) -> None:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        msg = f"{datatype} outputs travel in raw_output_contents only"
        raise TensorError(msg)
    flat = array.reshape(-1)
    if datatype == "BYTES":
        getattr(contents, field).extend(x if isinstance(x, bytes) else str(x).encode() for x in flat)
    else:
        getattr(contents, field).extend(flat.tolist())


def conform_output(spec: TensorSpec, value: Any, rows: int) -> np.ndarray:
    """A model's output as the declared datatype; wrong shapes are the model's error."""
    dtype = DTYPES[spec.datatype]
    if type(value) is np.ndarray and value.dtype == dtype:
        array = value  # the common case: already what was declared
    else:
        array = np.asarray(value, dtype=object if spec.datatype == "BYTES" else None)
        if spec.datatype != "BYTES":
            array = array.astype(dtype, copy=False)
    if array.ndim != len(spec.shape) or (array.shape and array.shape[0] != rows):
        msg = (
            f"the model returned output '{spec.name}' with shape {list(array.shape)} "
            "for a batch of "
            f"{rows}; it is declared as {list(spec.shape)}"
        )
        raise ValueError(msg)
    for want, got in zip(spec.shape[1:], array.shape[1:], strict=False):
        if want not in (-1, got):
            shape, declared = list(array.shape), list(spec.shape)
            msg = f"the model returned output '{spec.name}' with shape {shape}; declared {declared}"
            raise ValueError(msg)
    return array
