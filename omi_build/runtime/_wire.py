"""ModelInfer on the wire: raw tensors as views over the received bytes, answers written as bytes.

protobuf's parser copies a bytes field twice (into its arena while parsing, into a new Python
bytes when read): 16 MB of FP32 rows cost two 16 MB copies before numpy sees them, and building
the answer as a message costs the same again plus some 10 µs of Python per tensor. Here the
request's raw_input_contents (field 7) are memoryviews into the bytes gRPC handed over, and
every other field is parsed by protobuf as before (from those fields' own bytes, so protobuf
still checks everything the server reads). An answer carrying raw_output_contents is written
directly in protobuf's wire format, its tensor data copied once, into the message gRPC sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from .protocol import grpc_predict_v2_pb2 as pb

_RAW_FIELD = 7  # ModelInferRequest.raw_input_contents
_RAW_TAG = (_RAW_FIELD << 3) | 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


@dataclass(slots=True)
class InferRequest:
    """A ModelInferRequest: `message` holds every field but raw_input_contents, which `raw`
    holds as views into the received bytes (they keep those bytes alive, not a copy).

    `header`: the message's bytes before its raw tensors, when they are its last fields (as
    every encoder writes them) and it has no id: requests with the same header have the
    same names, datatypes and shapes, so the server checks them once (None otherwise)."""

    message: pb.ModelInferRequest
    raw: Sequence[bytes | memoryview]
    header: bytes | None = None


# A header a server remembers is small (a name, a few tensors' names and shapes: ~100 bytes);
# a longer one (a large parameters map) is checked every time, so 1,024 remembered headers
# cost at most a MiB.
_HEADER_MAX = 1024


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _header(data: bytes, raw: Sequence[bytes]) -> bytes | None:
    """data's bytes before its raw tensors, if these are its last fields, encoded as
    protobuf encodes them; None otherwise (the caller checks, once per header, that the
    bytes parse as whole fields without raw tensors: then nothing else fits after them)."""
    end = len(data)
    for item in raw:
        size = len(item)
        end -= 1 + _varint_size(size) + size
    if end <= 0 or end > _HEADER_MAX or data[end] != _RAW_TAG:
        return None
    return data[:end]


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if position >= len(data):
            msg = "a varint runs past the end of the message"
            raise DecodeError(msg)
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift >= 64:
            msg = "a varint is longer than 10 bytes"
            raise DecodeError(msg)


def _field(data: bytes, position: int) -> tuple[int, int, int, int]:
    """The field at `position`: (number, wire type, where its value starts, where it ends)."""
    key = data[position]
    if key < 0x80:
        position += 1
    else:
        key, position = _varint(data, position)
    number, wire = key >> 3, key & 7
    if number == 0:
        msg = "field number 0"
        raise DecodeError(msg)
    value_start = position
    if wire == _LENGTH:
        length, value_start = _varint(data, position)
        end = value_start + length
    elif wire == _VARINT:
        _, end = _varint(data, position)
    elif wire in (_FIXED64, _FIXED32):
        end = position + (8 if wire == _FIXED64 else 4)
    else:
        msg = f"wire type {wire} (groups) in field {number}"
        raise DecodeError(msg)
    if end > len(data):
        msg = f"field {number} runs past the end of the message"
        raise DecodeError(msg)
    return number, wire, value_start, end


_SCAN_FROM = 64 << 10  # below this, protobuf's copies cost less than a scan in Python


def parse_request(data: bytes) -> InferRequest:
    """A ModelInferRequest from the wire; DecodeError if it is not one."""
    if len(data) < _SCAN_FROM or _RAW_TAG not in data:
        message = pb.ModelInferRequest.FromString(data)
        tensors = message.raw_input_contents  # indexed once per input
        header = _header(data, tensors) if tensors and not message.id else None
        return InferRequest(message, tensors, header)
    view = memoryview(data)
    raw: list[memoryview] = []
    others: list[memoryview] = []
    kept_from = 0
    position = 0
    while position < len(data):
        field_start = position
        number, wire, value_start, position = _field(data, position)
        if number != _RAW_FIELD:
            continue
        if wire != _LENGTH:
            msg = "raw_input_contents is not length-delimited"
            raise DecodeError(msg)
        if kept_from < field_start:
            others.append(view[kept_from:field_start])
        raw.append(view[value_start:position])
        kept_from = position
    if kept_from < len(data):
        others.append(view[kept_from:])
    # Fields of a message may come in any order and be split: the rest parse as one message.
    return InferRequest(pb.ModelInferRequest.FromString(b"".join(others)), raw)


def _encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_field(number: int, payload: bytes) -> bytes:
    return _encode_varint((number << 3) | _LENGTH) + _encode_varint(len(payload)) + payload


_CACHED = 4096  # encoded tensor headers kept per server: one per output per batch size seen


class ResponseWriter:
    """ModelInferResponse bytes with raw_output_contents; what never changes is encoded once,
    and each output's header (name, datatype, shape) once per shape."""

    def __init__(self, model_name: str, model_version: str, outputs: Sequence[tuple[str, str]]) -> None:
        head = _length_field(1, model_name.encode())
        if model_version:
            head += _length_field(2, model_version.encode())
        self._head = head
        # each output tensor's name and datatype, as fields 1 and 2 of its InferOutputTensor
        self._names = {
            name: _length_field(1, name.encode()) + _length_field(2, datatype.encode())
            for name, datatype in outputs
        }
        self._tensors: dict[tuple[str, tuple[int, ...]], bytes] = {}
        self._sizes: dict[int, bytes] = {}

    def _tensor(self, name: str, shape: tuple[int, ...]) -> bytes:
        tensor = self._names[name]
        if shape:
            packed = b"".join(_encode_varint(d) for d in shape)
            tensor += b"\x1a" + _encode_varint(len(packed)) + packed
        encoded = _length_field(5, tensor)
        if len(self._tensors) < _CACHED:
            self._tensors[name, shape] = encoded
        return encoded

    def _raw_prefix(self, size: int) -> bytes:
        prefix = self._sizes.get(size)
        if prefix is None:
            prefix = b"\x32" + _encode_varint(size)
            if len(self._sizes) < _CACHED:
                self._sizes[size] = prefix
        return prefix

    def write(self, request_id: str, tensors: Sequence[tuple[str, tuple[int, ...], Any]]) -> bytes:
        """`tensors`: (output name, shape, its raw bytes: bytes or a C-contiguous array)."""
        parts: list[Any] = [self._head]
        if request_id:
            parts.append(_length_field(3, request_id.encode()))
        cached = self._tensors
        for name, shape, _ in tensors:
            parts.append(cached.get((name, shape)) or self._tensor(name, shape))
        for _, _, data in tensors:
            parts.append(self._raw_prefix(len(data) if isinstance(data, bytes) else data.nbytes))
            parts.append(data)
        return b"".join(parts)


def stream_answer(infer_response: bytes) -> bytes:
    """A ModelStreamInferResponse holding an already encoded ModelInferResponse (field 2)."""
    return b"\x12" + _encode_varint(len(infer_response)) + infer_response


def as_bytes(message: Any) -> bytes:
    """The serializer of the methods whose handlers answer with bytes already encoded."""
    if isinstance(message, bytes):
        return message
    data: bytes = message.SerializeToString()
    return data
