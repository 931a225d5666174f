"""inference.GRPCInferenceService: the Open Inference Protocol v2, with Triton's streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from ._batcher import Arrays, ModelError
from ._generated import grpc_predict_v2_pb2 as pb
from ._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from ._model import Config
from ._tensors import (
    TensorError,
    check_shape,
    conform_output,
    from_contents,
    from_raw,
    to_contents,
    to_raw,
)

SERVER_NAME = "omi-build"
EXTENSIONS = ["model_repository_readonly", "streaming"]


class RejectedError(Exception):
    """A request refused before the model saw it: a gRPC status and a message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, config: Config, state: Any, version: str) -> None:
        self._config = config
        self._state = state
        self._version = version
        self._inputs = {spec.name: spec for spec in config.inputs}
        self._outputs = {spec.name: spec for spec in config.outputs}

    # -- health and metadata ---------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._state.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self._state.ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=self._version, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await self._check_model(request.name, request.version, context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self._config.name,
            versions=[self._config.version],
            platform="python_omi-build",
            inputs=[
                tensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in self._config.inputs
            ],
            outputs=[
                tensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in self._config.outputs
            ],
        )

    async def _check_model(self, name: str, version: str, context: Any) -> None:
        if name != self._config.name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no model '{name}'; this server serves '{self._config.name}'",
            )
        if version and version != self._config.version:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model '{name}' has no version '{version}'; it has '{self._config.version}'",
            )

    # -- inference -------------------------------------------------------------------------
    def decode(self, request: pb.ModelInferRequest) -> tuple[Arrays, int, list[str]]:
        """Checked numpy inputs, the batch size, and the outputs to return."""
        if request.model_name != self._config.name:
            msg = f"no model '{request.model_name}'; this server serves '{self._config.name}'"
            raise RejectedError(grpc.StatusCode.NOT_FOUND, msg)
        if request.model_version and request.model_version != self._config.version:
            msg = f"model '{request.model_name}' has no version '{request.model_version}'"
            raise RejectedError(grpc.StatusCode.NOT_FOUND, msg)
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            msg = (
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
                "send one per input, in order"
            )
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
        arrays: Arrays = {}
        for index, tensor in enumerate(request.inputs):
            spec = self._inputs.get(tensor.name)
            if spec is None:
                known = ", ".join(self._inputs)
                raise RejectedError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown input '{tensor.name}'; the model takes: {known}",
                )
            if tensor.name in arrays:
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{tensor.name}' is given twice")
            if tensor.datatype != spec.datatype:
                given = tensor.datatype or "untyped"
                msg = f"input '{tensor.name}' is {given}, but the model takes {spec.datatype}"
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
            has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
            if raw and has_contents:
                msg = f"input '{tensor.name}' has contents and raw_input_contents; use one form"
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
            try:
                check_shape(spec, tensor.shape)
                if raw:
                    arrays[tensor.name] = from_raw(spec, tensor.shape, raw[index])
                else:
                    arrays[tensor.name] = from_contents(spec, tensor.shape, tensor.contents)
            except TensorError as exc:
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        missing = [name for name in self._inputs if name not in arrays]
        if missing:
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, f"missing input(s): {', '.join(missing)}")
        rows = {array.shape[0] for array in arrays.values() if array.ndim}
        if len(rows) > 1:
            msg = f"inputs disagree on the batch size: {sorted(rows)}"
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
        wanted = [output.name for output in request.outputs]
        for name in wanted:
            if name not in self._outputs:
                known = ", ".join(self._outputs)
                raise RejectedError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown output '{name}'; the model gives: {known}",
                )
        return arrays, (rows.pop() if rows else 1), wanted or list(self._outputs)

    def encode(
        self, request: pb.ModelInferRequest, outputs: Arrays, wanted: list[str]
    ) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse(
            model_name=self._config.name, model_version=self._config.version, id=request.id
        )
        use_raw = bool(request.raw_input_contents) or not request.inputs
        for name in wanted:
            array = outputs[name]
            datatype = self._outputs[name].datatype
            tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            if use_raw or datatype == "FP16":
                response.raw_output_contents.append(to_raw(array, datatype))
            else:
                to_contents(array, datatype, tensor.contents)
        return response

    async def _abort(self, context: Any, exc: RejectedError) -> None:
        self._state.log("rejected", level="warning", code=exc.code.name, message=str(exc))
        await context.abort(exc.code, str(exc))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        if not self._state.ready:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is not ready")
        try:
            with self._state.batcher.arriving():
                arrays, rows, wanted = self.decode(request)
        except RejectedError as exc:
            await self._abort(context, exc)
        try:
            outputs = await self._state.batcher.predict(arrays, rows)
        except ModelError as exc:
            self._state.log("model_error", level="error", message=str(exc))
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return self.encode(request, outputs, wanted)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in request_iterator:
            try:
                arrays, rows, wanted = self.decode(request)
            except RejectedError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))
                continue
            try:
                async for outputs in self._stream(arrays, rows):
                    yield pb.ModelStreamInferResponse(infer_response=self.encode(request, outputs, wanted))
            except ModelError as exc:
                self._state.log("model_error", level="error", message=str(exc))
                yield pb.ModelStreamInferResponse(error_message=str(exc))

    async def _stream(self, arrays: Arrays, rows: int) -> AsyncIterator[Arrays]:
        """A streaming model's responses as it yields them; otherwise one predict."""
        generate = getattr(self._state.model, "predict_stream", None)
        if not callable(generate):
            yield await self._state.batcher.predict(arrays, rows)
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                for item in generate(arrays):
                    loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
            except Exception as exc:  # noqa: BLE001 - any model failure ends this request only
                loop.call_soon_threadsafe(
                    queue.put_nowait, ("error", f"the model raised {type(exc).__name__}: {exc}")
                )
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        loop.run_in_executor(self._state.batcher.executor, produce)
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise ModelError(value)
            yield self._conform(value)

    def _conform(self, value: Any) -> Arrays:
        if not isinstance(value, dict):
            msg = f"the model's predict_stream yielded {type(value).__name__}, not a dict of arrays"
            raise ModelError(msg)
        result: Arrays = {}
        for spec in self._config.outputs:
            if spec.name not in value:
                msg = f"the model's predict_stream yielded no output '{spec.name}'"
                raise ModelError(msg)
            array = np.asarray(value[spec.name], dtype=object if spec.datatype == "BYTES" else None)
            try:
                result[spec.name] = conform_output(spec, array, array.shape[0] if array.ndim else 1)
            except (ValueError, TypeError) as exc:
                raise ModelError(str(exc)) from exc
        return result
