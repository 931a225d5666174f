"""Bounds on what one client can make the server do: admission, time, size and echoed text.

- Model work (OIP ModelInfer and ModelStreamInfer, OMI Run) is admitted up to
  `serving.concurrency.max_in_flight` at once; more get RESOURCE_EXHAUSTED at once, which
  clients retry. Health, reflection, metadata and OMI Status are never counted, so a
  Kubernetes probe answers whatever the model's queue holds.
- Every model call has `serving.timeouts.request_s` (DEADLINE_EXCEEDED), and past
  `drain_s` on shutdown whatever still waits is answered UNAVAILABLE.
- A message that does not decode is INVALID_ARGUMENT (grpcio's default is UNKNOWN).
- Messages quote at most a short prefix of any client string.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError

from ._startup import short

__all__ = [
    "Deadlines", "Gate", "Guarded", "Rejected", "answer_bytes", "guard", "refuse_undecodable", "short",
]  # fmt: skip

T = TypeVar("T")


class Rejected(Exception):  # noqa: N818 - a status to answer with, not a failure of the server
    """A request answered with a gRPC status before or instead of the model's answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Gate:
    """Admits at most `limit` model calls at once; the rest are refused, never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.inflight = 0

    def admit(self) -> Gate:
        """`with gate.admit():` (or `with gate:`) holds one slot for the block (a plain
        context manager: a generator-based one costs a microsecond more per request)."""
        return self

    def __enter__(self) -> None:
        if self.inflight >= self.limit:
            msg = f"the server is at its limit of {self.limit} requests in flight; retry shortly"
            raise Rejected(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)
        self.inflight += 1

    def __exit__(self, *_: object) -> None:
        self.inflight -= 1


class Deadlines:
    """request_s for every model call, and the end of the drain for those still waiting.

    A timer per call (asyncio.timeout), not a task: a fast model's call must stay cheap."""

    def __init__(self, request_s: float) -> None:
        self.request_s = request_s
        self.expired = asyncio.Event()  # set when drain_s has passed on shutdown
        self.over = False  # the same, read without a call on every request
        self._waiting: set[asyncio.Task[Any]] = set()

    def expire(self) -> None:
        """The drain is over: every call still waiting for the model is answered UNAVAILABLE."""
        self.expired.set()
        self.over = True
        for task in list(self._waiting):
            task.cancel(_EXPIRED)

    async def run(self, awaitable: Awaitable[T]) -> T:
        if self.expired.is_set():
            raise Rejected(grpc.StatusCode.UNAVAILABLE, _EXPIRED)
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - always inside a gRPC handler's task
        self._waiting.add(task)
        try:
            async with asyncio.timeout(self.request_s):
                return await awaitable
        except TimeoutError:
            # A batch not yet started drops the request; a model call already running in a
            # thread runs to its end (Python cannot stop a thread) and its answer is discarded.
            msg = f"the model did not answer within serving.timeouts.request_s ({self.request_s:g} s)"
            raise Rejected(grpc.StatusCode.DEADLINE_EXCEEDED, msg) from None
        except asyncio.CancelledError as exc:
            if exc.args == (_EXPIRED,):
                task.uncancel()
                raise Rejected(grpc.StatusCode.UNAVAILABLE, _EXPIRED) from None
            raise  # the client went away
        finally:
            self._waiting.discard(task)


_EXPIRED = "the server is shutting down and its drain time passed before the model answered; retry"


class _Undecodable:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _guarded(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def safe(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return _Undecodable(exc)

    return safe


_UNDECODABLE = "the request is not a valid protobuf message of this method's type"


async def refuse_undecodable(context: Any) -> None:
    """INVALID_ARGUMENT for a request whose bytes did not decode (see guard)."""
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _UNDECODABLE)


def _unary_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            await refuse_undecodable(context)
        return await behavior(request, context)

    return call


def _unary_request_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, _Undecodable):
            await refuse_undecodable(context)
        async for response in behavior(request, context):
            yield response

    return call


def _checked_requests(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, _Undecodable):
                await refuse_undecodable(context)
            yield request

    return each()


def _stream_request(behavior: Callable[..., Any], streams_back: bool) -> Callable[..., Any]:
    if streams_back:

        async def both(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for response in behavior(_checked_requests(requests, context), context):
                yield response

        return both

    async def one(requests: AsyncIterator[Any], context: Any) -> Any:
        return await behavior(_checked_requests(requests, context), context)

    return one


def guard(handler: Any, *, checks_itself: bool = False) -> Any:
    """A method handler whose undecodable requests become INVALID_ARGUMENT, not UNKNOWN.
    `checks_itself`: the behaviour refuses them itself (refuse_undecodable), so it is not
    wrapped in one more coroutine per call."""
    replacements: dict[str, Any] = {"request_deserializer": _guarded(handler.request_deserializer)}
    if checks_itself:
        return handler._replace(**replacements)
    if handler.unary_unary is not None:
        replacements["unary_unary"] = _unary_request(handler.unary_unary)
    elif handler.unary_stream is not None:
        replacements["unary_stream"] = _unary_request_stream(handler.unary_stream)
    elif handler.stream_unary is not None:
        replacements["stream_unary"] = _stream_request(handler.stream_unary, streams_back=False)
    elif handler.stream_stream is not None:
        replacements["stream_stream"] = _stream_request(handler.stream_stream, streams_back=True)
    return handler._replace(**replacements)


class Guarded:
    """Stands in for the server while grpcio's generated add_*_to_server functions register a
    service: each method handler is guarded once, at registration, so no call pays for an
    interceptor (measured: 20% of the throughput of a fast model).

    Only the `hot` methods are registered with gRPC by name; the rest are found by service
    name. grpcio's server waits for the next call of every registered method at once, with
    asyncio.wait over one future per method, on every call: with health, reflection and
    both protocols registered that was some 17 futures, walked twice per request."""

    def __init__(
        self,
        server: Any,
        codecs: Mapping[tuple[str, str], tuple[Any, Any]] | None = None,
        checks_itself: frozenset[tuple[str, str]] = frozenset(),
        hot: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self._server = server
        # (service, method) -> (request deserializer, response serializer) used instead of
        # the generated code's protobuf ones (ModelInfer's zero-copy wire codec)
        self._codecs = dict(codecs or {})
        self._checks_itself = checks_itself
        self._hot = hot

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Skipped: add_registered_method_handlers, which the generated code calls next with
        the same methods, registers the guarded handlers both ways."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        checked = {}
        for method, generated in handlers.items():
            codec = self._codecs.get((service, method))
            handler = generated
            if codec is not None:
                handler = generated._replace(request_deserializer=codec[0], response_serializer=codec[1])
            checked[method] = guard(handler, checks_itself=(service, method) in self._checks_itself)
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, checked),))
        hot = {method: handler for method, handler in checked.items() if (service, method) in self._hot}
        if hot:
            self._server.add_registered_method_handlers(service, hot)


# Bytes per element of each datatype as the answer carries it (BYTES: a 4-byte length at least).
_ELEMENT_BYTES = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
    "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 4,
}  # fmt: skip


def answer_bytes(shapes: list[tuple[tuple[int, ...], str]], rows: int) -> int:
    """A lower bound of the answer's size: the declared shapes (a free dimension past the
    batch counts 1) for `rows` rows. Above max_message_bytes the answer could never be sent,
    so the request is refused before the model runs."""
    total = 0
    for shape, datatype in shapes:
        per_row = 1
        for dimension in shape[1:]:
            per_row *= max(1, dimension)
        total += rows * per_row * _ELEMENT_BYTES.get(datatype, 1)
    return total
