"""inference.GRPCInferenceService: the Open Inference Protocol v2, with Triton's streaming."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from ._batcher import Arrays, ModelError
from ._limits import Rejected, answer_bytes, refuse_undecodable, short
from ._model import Config
from ._wire import InferRequest, ResponseWriter, as_bytes, parse_request, stream_answer
from .protocol import grpc_predict_v2_pb2 as pb
from .protocol import grpc_predict_v2_pb2_grpc as pb_grpc
from .tensors import (
    TensorError,
    check_shape,
    conform_output,
    from_contents,
    from_raw,
    to_contents,
    to_raw,
)

SERVER_NAME = "omi-build"
STREAM_BUFFER = 4  # responses a stream's generator may run ahead of its client
EXTENSIONS = ["model_repository_readonly", "streaming"]


RejectedError = Rejected  # one type for every status answered before or instead of the model

# ModelInfer and ModelStreamInfer read requests with raw tensors as views and answer bytes.
_SERVICE = "inference.GRPCInferenceService"
CODECS = {
    (_SERVICE, "ModelInfer"): (parse_request, as_bytes),
    (_SERVICE, "ModelStreamInfer"): (parse_request, as_bytes),
}
CHECKS_ITSELF = frozenset({(_SERVICE, "ModelInfer")})  # refuses undecodable requests itself


_CHECKED_HEADERS = 1024


class _Checked:
    """A request header's checked meaning: each raw input's name, dtype, shape and size, the
    batch size and the outputs to return."""

    __slots__ = ("inputs", "rows", "wanted")

    def __init__(
        self,
        inputs: tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...],
        rows: int,
        wanted: list[str],
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.wanted = wanted

    def arrays(self, raw: Sequence[bytes | memoryview]) -> Arrays | None:
        """The inputs as views over `raw`; None if its tensors are not the sizes checked."""
        if len(raw) != len(self.inputs):
            return None
        arrays = {}
        for (name, dtype, shape, size), data in zip(self.inputs, raw, strict=True):
            if len(data) != size:
                return None
            arrays[name] = np.ndarray(shape, dtype, data)
        return arrays


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, config: Config, state: Any, version: str) -> None:
        self._config = config
        self._state = state
        self._version = version
        self._inputs = {spec.name: spec for spec in config.inputs}
        self._outputs = {spec.name: spec for spec in config.outputs}
        self._max_message = int(config.serving["max_message_bytes"])
        # what every answer shares, worked out once rather than per request
        self._name = config.name
        self._output_names = [spec.name for spec in config.outputs]
        self._answer_row_bytes = answer_bytes([(s.shape, s.datatype) for s in config.outputs], 1)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._metadata = pb.ModelMetadataResponse(
            name=config.name,
            versions=[config.version],
            platform="python_omi-build",
            inputs=[tensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in config.inputs],
            outputs=[tensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in config.outputs],
        )
        self._writer = ResponseWriter(
            config.name, config.version, [(s.name, s.datatype) for s in config.outputs]
        )
        # request headers already checked (see InferRequest.header); BYTES inputs are
        # split and size-checked per request, so a model that takes them is never cached
        self._checked: dict[bytes, _Checked] = {}
        self._raw_only = all(spec.datatype != "BYTES" for spec in config.inputs)

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
        return self._metadata

    async def _check_model(self, name: str, version: str, context: Any) -> None:
        if name != self._config.name:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no model '{short(name)}'; this server serves '{self._config.name}'",
            )
        if version and version != self._config.version:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"model '{short(name)}' has no version '{short(version)}'; it has '{self._config.version}'",
            )

    # -- inference -------------------------------------------------------------------------
    def decode(self, request: InferRequest) -> tuple[Arrays, int, list[str]]:
        """Checked numpy inputs, the batch size, and the outputs to return."""
        header = request.header
        if header is not None and (checked := self._checked.get(header)) is not None:
            arrays = checked.arrays(request.raw)
            if arrays is not None:
                return arrays, checked.rows, checked.wanted
        decoded = self._decode(request)
        if header is not None and self._raw_only:
            self._remember(header, decoded)
        return decoded

    def _remember(self, header: bytes, decoded: tuple[Arrays, int, list[str]]) -> None:
        """What these header bytes were checked to mean, if they hold every field but the
        raw tensors (then a request with the same header differs only in tensor bytes)."""
        try:
            alone = pb.ModelInferRequest.FromString(header)
        except DecodeError:
            return
        if alone.raw_input_contents:
            return
        if len(self._checked) >= _CHECKED_HEADERS:
            self._checked.clear()  # bounded: a client sending ever new headers costs a re-check
        arrays, rows, wanted = decoded
        inputs = tuple((name, a.dtype, a.shape, a.nbytes) for name, a in arrays.items())
        self._checked[header] = _Checked(inputs, rows, wanted)

    def _decode(self, request: InferRequest) -> tuple[Arrays, int, list[str]]:
        message = request.message
        if message.model_name != self._name:
            msg = f"no model '{short(message.model_name)}'; this server serves '{self._name}'"
            raise RejectedError(grpc.StatusCode.NOT_FOUND, msg)
        if message.model_version and message.model_version != self._config.version:
            msg = f"model '{short(message.model_name)}' has no version '{short(message.model_version)}'"
            raise RejectedError(grpc.StatusCode.NOT_FOUND, msg)
        raw = request.raw
        inputs = message.inputs
        if raw and len(raw) != len(inputs):
            msg = f"{len(raw)} raw_input_contents for {len(inputs)} inputs; send one per input, in order"
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
        arrays: Arrays = {}
        for index, tensor in enumerate(inputs):
            name = tensor.name
            spec = self._inputs.get(name)
            if spec is None:
                known = ", ".join(self._inputs)
                raise RejectedError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown input '{short(name)}'; the model takes: {known}",
                )
            if name in arrays:
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' is given twice")
            if tensor.datatype != spec.datatype:
                given = short(tensor.datatype) or "untyped"
                msg = f"input '{name}' is {given}, but the model takes {spec.datatype}"
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
            shape = tensor.shape[:]  # a list: half the cost of tuple() on protobuf's container
            try:
                check_shape(spec, shape)
                if raw:
                    if tensor.HasField("contents") and tensor.contents.ByteSize() > 0:
                        msg = f"input '{name}' has contents and raw_input_contents; use one form"
                        raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
                    arrays[name] = from_raw(spec, shape, raw[index])
                else:
                    arrays[name] = from_contents(spec, shape, tensor.contents)
            except TensorError as exc:
                raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        if len(arrays) != len(self._inputs):
            missing = [name for name in self._inputs if name not in arrays]
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, f"missing input(s): {', '.join(missing)}")
        rows = {array.shape[0] for array in arrays.values() if array.ndim}
        if len(rows) > 1:
            msg = f"inputs disagree on the batch size: {sorted(rows)}"
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
        batch = rows.pop() if rows else 1
        if message.outputs:
            chosen = self._chosen_outputs(message)
            per_row = answer_bytes([(self._outputs[n].shape, self._outputs[n].datatype) for n in chosen], 1)
        else:
            chosen, per_row = self._output_names, self._answer_row_bytes
        if batch * per_row > self._max_message:
            msg = (
                f"the answer for {batch} rows would be at least {batch * per_row:,} bytes, over the "
                f"server's limit of {self._max_message:,} (serving.max_message_bytes); send fewer rows"
            )
            raise RejectedError(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)
        return arrays, batch, chosen

    def _chosen_outputs(self, message: pb.ModelInferRequest) -> list[str]:
        wanted = [output.name for output in message.outputs]
        for name in wanted:
            if name not in self._outputs:
                known = ", ".join(self._outputs)
                raise RejectedError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown output '{short(name)}'; the model gives: {known}",
                )
        if len(set(wanted)) != len(wanted):
            twice = sorted({name for name in wanted if wanted.count(name) > 1})
            msg = f"output(s) {', '.join(twice)} asked for more than once; ask for each once"
            raise RejectedError(grpc.StatusCode.INVALID_ARGUMENT, msg)
        return wanted

    def encode(self, request: InferRequest, outputs: Arrays, wanted: list[str]) -> bytes:
        """The encoded ModelInferResponse: raw_output_contents when the request came raw (or
        had no inputs), else typed contents as the request used (FP16 always travels raw)."""
        if request.raw or not request.message.inputs:
            tensors = []
            for name in wanted:
                array = outputs[name]
                datatype = self._outputs[name].datatype
                if datatype == "BYTES":
                    data: Any = to_raw(array, datatype)
                else:
                    data = array if array.flags.c_contiguous else np.ascontiguousarray(array)
                tensors.append((name, array.shape, data))
            return self._writer.write(request.message.id, tensors)
        response = pb.ModelInferResponse(
            model_name=self._name, model_version=self._config.version, id=request.message.id
        )
        for name in wanted:
            array = outputs[name]
            datatype = self._outputs[name].datatype
            tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            if datatype == "FP16":
                response.raw_output_contents.append(to_raw(array, datatype))
            else:
                to_contents(array, datatype, tensor.contents)
        return response.SerializeToString()

    async def _abort(self, context: Any, exc: RejectedError) -> None:
        self._state.log("rejected", level="warning", code=exc.code.name, message=str(exc))
        await context.abort(exc.code, str(exc))

    async def ModelInfer(self, request: InferRequest, context: Any) -> bytes:
        if type(request) is not InferRequest:
            await refuse_undecodable(context)
        state = self._state
        batcher = state.batcher
        if batcher is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is not loaded yet")
        try:
            with state.gate:
                arrays, rows, wanted = self.decode(request)
                # A fast model answers on the loop: at once, or with the batch it joins.
                if batcher.fast and not state.deadlines.over:
                    outputs = batcher.in_turn(arrays, rows)
                    if type(outputs) is not dict:
                        outputs = await outputs
                else:
                    outputs = await state.deadlines.run(batcher.predict(arrays, rows))
        except RejectedError as exc:
            await self._abort(context, exc)
        except ModelError as exc:
            state.log("model_error", level="error", message=str(exc))
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return self.encode(request, outputs, wanted)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[InferRequest], context: Any
    ) -> AsyncIterator[bytes | pb.ModelStreamInferResponse]:
        """One stream is one slot of max_in_flight for its whole life; it ends when its client
        sends nothing for stream_idle_s, and each request's responses get request_s."""
        if not self._state.loaded:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model is not loaded yet")
        with contextlib.ExitStack() as admitted:
            try:
                admitted.enter_context(self._state.gate.admit())
            except RejectedError as exc:
                await self._abort(context, exc)
            requests = aiter(request_iterator)
            while True:
                try:
                    async with asyncio.timeout(self._state.stream_idle_s):
                        request = await anext(requests)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    idle = f"no request on this stream for {self._state.stream_idle_s:g} s (stream_idle_s)"
                    await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, idle)
                try:
                    arrays, rows, wanted = self.decode(request)
                except RejectedError as exc:
                    yield pb.ModelStreamInferResponse(error_message=str(exc))
                    continue
                try:
                    async for outputs in self._stream(arrays, rows):
                        yield stream_answer(self.encode(request, outputs, wanted))
                except ModelError as exc:
                    self._state.log("model_error", level="error", message=str(exc))
                    yield pb.ModelStreamInferResponse(error_message=str(exc))
                except RejectedError as exc:
                    yield pb.ModelStreamInferResponse(error_message=str(exc))

    async def _stream(self, arrays: Arrays, rows: int) -> AsyncIterator[Arrays]:
        """A streaming model's responses as it yields them; otherwise one predict.

        The generator runs on the stream pool (never the batcher's workers, so a long stream
        cannot starve unary requests), at most STREAM_BUFFER responses ahead of what the
        client has taken, and stops at its next item once the client cancels, disconnects or
        request_s passes."""
        generate = getattr(self._state.model, "predict_stream", None)
        if not callable(generate):
            yield await self._state.deadlines.run(self._state.batcher.predict(arrays, rows))
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=STREAM_BUFFER)
        stopped = threading.Event()

        def hand_over(kind: str, value: Any) -> bool:
            """Put one item, waiting while the queue is full; False once the consumer left."""
            future = asyncio.run_coroutine_threadsafe(queue.put((kind, value)), loop)
            while not stopped.is_set():
                try:
                    future.result(timeout=0.1)
                except TimeoutError:
                    continue
                except Exception:  # noqa: BLE001 - the loop closed: nobody is reading
                    return False
                return True
            future.cancel()
            return False

        def produce() -> None:
            items = generate(arrays)
            try:
                for item in items:
                    if stopped.is_set() or not hand_over("item", item):
                        return
            except Exception as exc:  # noqa: BLE001 - any model failure ends this request only
                hand_over("error", f"the model raised {type(exc).__name__}: {exc}")
                return
            finally:
                close = getattr(items, "close", None)
                if callable(close):
                    close()  # runs the generator's finally blocks
            hand_over("end", None)

        producing = loop.run_in_executor(self._state.streams, produce)
        deadline = loop.time() + self._state.deadlines.request_s
        try:
            while True:
                remaining = deadline - loop.time()
                if self._state.deadlines.expired.is_set():
                    msg = "the server is shutting down and its drain time passed; retry"
                    raise RejectedError(grpc.StatusCode.UNAVAILABLE, msg)
                if remaining <= 0:
                    limit = self._state.deadlines.request_s
                    msg = f"the stream did not finish within serving.timeouts.request_s ({limit:g} s)"
                    raise RejectedError(grpc.StatusCode.DEADLINE_EXCEEDED, msg)
                try:  # a short wait, so the end of the drain is noticed too
                    async with asyncio.timeout(min(remaining, 0.5)):  # a timer, not a task per item
                        kind, value = await queue.get()
                except TimeoutError:
                    continue
                if kind == "end":
                    return
                if kind == "error":
                    raise ModelError(value)
                yield self._conform(value)
        finally:
            stopped.set()  # cancelled, disconnected, timed out or done: the producer stops
            producing.cancel()

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
