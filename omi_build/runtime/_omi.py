"""ModzyModel: the Open Model Interface v1 (Status, Run, Shutdown), stricter than the reference.

Each RunRequest item maps input names ("filenames") to bytes. A numeric tensor item is one
instance without the batch dimension, as JSON (`[5.1, 3.5, 1.4, 0.2]`) or as a .npy file; a
BYTES item is the element itself (an image, a document). Each output item maps every output
name to its JSON value, plus `results.json` with all of them. Unknown or missing keys are
refused with 400 before the model runs; a failed item has success=false and an `error` key.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ._batcher import Arrays, ModelError
from ._limits import Rejected, short
from ._model import Config
from .protocol import model2_template_pb2 as pb
from .protocol import model2_template_pb2_grpc as pb_grpc
from .tensors import DTYPES, TensorError, TensorSpec, check_shape

_NPY_MAGIC = b"\x93NUMPY"


_NUMERIC_KINDS = frozenset("biuf")  # bool, signed, unsigned, float: never complex, dates or objects


def _npy(spec: TensorSpec, data: bytes) -> np.ndarray:
    """A .npy item, its header checked before any array is made: its dtype must be real and
    numeric, and its declared shape must fit the bytes actually sent (a header may claim 4 TiB)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _fortran, dtype = read_header(stream)
    except (ValueError, TypeError, SyntaxError, OverflowError) as exc:
        msg = f"input '{spec.name}' is not a readable .npy file: {short(exc, 200)}"
        raise TensorError(msg) from None
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        msg = f"input '{spec.name}' is a .npy of {dtype}; the model takes {spec.datatype} (real numbers)"
        raise TensorError(msg)
    count = 1
    for dimension in shape:
        count *= int(dimension)
    if count * dtype.itemsize > len(data):
        msg = f"input '{spec.name}': the .npy header declares shape {tuple(shape)}, more than the bytes sent"
        raise TensorError(msg)
    loaded: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return loaded


def _item_array(spec: TensorSpec, data: bytes) -> np.ndarray:
    """One instance of an input, with a batch dimension of 1 added."""
    if spec.datatype == "BYTES":
        if spec.max_bytes is not None and len(data) > spec.max_bytes:
            msg = f"input '{spec.name}' has {len(data)} bytes; the limit is {spec.max_bytes}"
            raise TensorError(msg)
        array = np.empty(1, dtype=object)
        array[0] = data
        return array.reshape((1,) * len(spec.shape))
    try:
        if data.startswith(_NPY_MAGIC):
            value = _npy(spec, data)
        else:
            # Nesting deeper than numpy's dimensions is a ValueError, deeper than json's
            # recursion limit a RecursionError: both a 400 below; the shape check does the rest.
            value = np.asarray(json.loads(data))
            if value.dtype.kind not in _NUMERIC_KINDS:
                msg = f"input '{spec.name}' is not an array of numbers"
                raise TensorError(msg)
        array = np.asarray(value, dtype=DTYPES[spec.datatype])[np.newaxis, ...]
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:
        msg = f"input '{spec.name}' is not a JSON array or .npy of {spec.datatype}: {short(exc, 200)}"
        raise TensorError(msg) from None
    check_shape(spec, array.shape)
    return array


def _json_value(value: Any) -> Any:
    """An output (or an explanation) as strict JSON: numbers, lists, mappings, text for BYTES,
    and null for NaN and infinities (JSON has none; JavaScript's and Go's parsers reject `NaN`)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [_json_value(item) for item in value]
        finite = value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
        return value.tolist() if finite else _finite(value.tolist())
    if isinstance(value, np.generic):
        return _finite(value.item())
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return _finite(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=False).encode()


class ModzyService(pb_grpc.ModzyModelServicer):
    def __init__(self, config: Config, state: Any, shutdown: Callable[[], None]) -> None:
        self._config = config
        self._state = state
        self._shutdown = shutdown
        self._inputs = {spec.name: spec for spec in config.inputs}
        # Items of one Run: each is a model call, so a few bytes of request cannot ask for
        # hundreds of thousands of them.
        self._max_items = 64 * max(1, int(config.serving["batching"]["max_batch_size"]))

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        raw = self._config.raw["model"]
        serving = self._config.serving
        ready = self._state.ready
        return pb.StatusResponse(
            status_code=200 if ready else 503,
            status="OK" if ready else "LOADING",
            message="model loaded" if ready else "the model is loading",
            model_info=pb.ModelInfo(
                model_name=self._config.name,
                model_version=self._config.version,
                model_author=", ".join(raw.get("authors") or []),
                model_type="grpc",
                source="omi-build",
            ),
            description=pb.ModelDescription(summary=raw.get("description") or ""),
            inputs=[
                pb.ModelInput(
                    filename=s.name,
                    accepted_media_types=list(s.media_types) or ["application/json"],
                    max_size=str(s.max_bytes or ""),
                    description=s.description,
                )
                for s in self._config.inputs
            ],
            outputs=[
                pb.ModelOutput(filename=s.name, media_type="application/json", description=s.description)
                for s in self._config.outputs
            ],
            timeout=pb.ModelTimeout(
                status=f"{serving['timeouts']['startup_s']}s",
                run=f"{serving['timeouts']['request_s']}s",
            ),
            features=pb.ModelFeatures(
                batch_size=serving["batching"]["max_batch_size"],
                results_format="json",
                explanation_format="json" if callable(getattr(self._state.model, "explain", None)) else "",
                drift_format="json" if callable(getattr(self._state.model, "detect_drift", None)) else "",
            ),
        )

    def _decode(self, request: pb.RunRequest) -> list[Arrays]:
        if not request.inputs:
            msg = "the request has no inputs; send at least one item"
            raise TensorError(msg)
        if len(request.inputs) > self._max_items:
            msg = (
                f"the request has {len(request.inputs):,} items; one Run takes at most "
                f"{self._max_items:,} (64 x serving.batching.max_batch_size): send several"
            )
            raise TensorError(msg)
        items = []
        for index, item in enumerate(request.inputs):
            keys = set(item.input)
            unknown = sorted(keys - set(self._inputs))
            missing = sorted(set(self._inputs) - keys)
            if unknown:
                msg = (
                    f"item {index}: unknown input(s) {short(', '.join(unknown))}; "
                    f"the model takes: {', '.join(self._inputs)}"
                )
                raise TensorError(msg)
            if missing:
                msg = f"item {index}: missing input(s) {', '.join(missing)}"
                raise TensorError(msg)
            try:
                items.append(
                    {name: _item_array(self._inputs[name], data) for name, data in item.input.items()}
                )
            except TensorError as exc:
                msg = f"item {index}: {exc}"
                raise TensorError(msg) from None
        return items

    async def _extra(self, method: str, inputs: Arrays) -> bytes:
        function = getattr(self._state.model, method)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._state.batcher.executor, function, inputs)
        return _dumps(_json_value(result))

    async def _run_item(self, inputs: Arrays, request: pb.RunRequest) -> pb.OutputItem:
        try:
            outputs = await self._state.deadlines.run(self._state.batcher.predict(inputs, 1))
        except ModelError as exc:
            self._state.log("model_error", level="error", message=str(exc))
            return pb.OutputItem(output={"error": str(exc).encode()}, success=False)
        except Rejected as exc:
            return pb.OutputItem(output={"error": str(exc).encode()}, success=False)
        values = {name: _json_value(array[0] if array.ndim else array) for name, array in outputs.items()}
        output = {name: _dumps(value) for name, value in values.items()}
        output["results.json"] = _dumps(values)
        for flag, method in (("explain", "explain"), ("detect_drift", "detect_drift")):
            if not getattr(request, flag):
                continue
            if not callable(getattr(self._state.model, method, None)):
                output["error"] = f"{flag} was asked for, but the model has no {method} method".encode()
                return pb.OutputItem(output=output, success=False)
            try:
                output[f"{method}.json"] = await self._extra(method, inputs)
            except Exception as exc:  # noqa: BLE001 - the model's failure is this item's failure
                output["error"] = f"{method} raised {type(exc).__name__}: {exc}".encode()
                return pb.OutputItem(output=output, success=False)
        return pb.OutputItem(output=output, success=True)

    async def Run(self, request: pb.RunRequest, context: Any) -> pb.RunResponse:
        if not self._state.loaded:
            return pb.RunResponse(
                status_code=503, status="Unavailable", message="the model is not loaded yet"
            )
        try:
            with self._state.gate.admit():
                return await self._run(request)
        except Rejected as exc:
            return pb.RunResponse(status_code=429, status="Too Many Requests", message=str(exc))

    async def _run(self, request: pb.RunRequest) -> pb.RunResponse:
        try:
            items = self._decode(request)
        except TensorError as exc:
            self._state.log("rejected", level="warning", code="400", message=str(exc))
            return pb.RunResponse(status_code=400, status="Bad Request", message=str(exc))
        outputs = await asyncio.gather(*(self._run_item(item, request) for item in items))
        failed = sum(not item.success for item in outputs)
        if failed == len(outputs):
            return pb.RunResponse(
                status_code=500, status="Error", message="every item failed", outputs=outputs
            )
        message = f"{failed} of {len(outputs)} items failed" if failed else "OK"
        return pb.RunResponse(status_code=200, status="OK", message=message, outputs=outputs)

    async def Shutdown(self, request: pb.ShutdownRequest, context: Any) -> pb.ShutdownResponse:
        self._shutdown()
        return pb.ShutdownResponse(status_code=200, status="OK", message="draining, then exiting")
