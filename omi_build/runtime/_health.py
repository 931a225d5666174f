"""grpc.health.v1.Health and server reflection (v1 and v1alpha), without extra packages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from ._limits import short
from .protocol import health_pb2, health_pb2_grpc, reflection_pb2_grpc
from .protocol import reflection_pb2 as rpb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthService(health_pb2_grpc.HealthServicer):
    """Every service (and "" for the server) shares one status: the model's."""

    def __init__(self, services: Iterable[str]) -> None:
        self._names = ["", *services]
        self._status: health_pb2.HealthCheckResponse.ServingStatus = NOT_SERVING
        self._changed = asyncio.Event()

    def set(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        self._status = status
        self._changed.set()
        self._changed = asyncio.Event()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self._names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{short(request.service)}'")
        return health_pb2.HealthCheckResponse(status=self._status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        status = health_pb2.HealthCheckResponse(status=self._status)
        return health_pb2.HealthListResponse(statuses=dict.fromkeys(self._names, status))

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if request.service not in self._names:
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        while True:
            changed = self._changed
            yield health_pb2.HealthCheckResponse(status=self._status)
            await changed.wait()


class ReflectionService(reflection_pb2_grpc.ServerReflectionServicer):
    """Lets grpcurl and other generic clients list the services and fetch their schemas."""

    def __init__(self, services: Iterable[str]) -> None:
        self._services = sorted(services)
        self._pool = descriptor_pool.Default()

    def _files(self, name: str, sent: set[str]) -> list[bytes]:
        found = self._pool.FindFileByName(name)
        result = []
        pending = [found]
        while pending:
            current = pending.pop()
            if current.name in sent:
                continue
            sent.add(current.name)
            proto = descriptor_pb2.FileDescriptorProto()
            current.CopyToProto(proto)
            result.append(proto.SerializeToString())
            pending.extend(current.dependencies)
        return result

    def _answer(self, request: rpb.ServerReflectionRequest, sent: set[str]) -> rpb.ServerReflectionResponse:
        response = rpb.ServerReflectionResponse(valid_host=request.host, original_request=request)
        which = request.WhichOneof("message_request")
        try:
            if which == "list_services":
                response.list_services_response.service.extend(
                    rpb.ServiceResponse(name=n) for n in self._services
                )
            elif which == "file_by_filename":
                files = self._files(request.file_by_filename, sent)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif which == "file_containing_symbol":
                name = self._pool.FindFileContainingSymbol(request.file_containing_symbol).name
                files = self._files(name, sent)
                response.file_descriptor_response.file_descriptor_proto.extend(files)
            elif which == "all_extension_numbers_of_type":
                self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.base_type_name = request.all_extension_numbers_of_type
            else:
                response.error_response.error_code = grpc.StatusCode.UNIMPLEMENTED.value[0]
                response.error_response.error_message = f"{which} is not supported"
        except KeyError as exc:
            response.ClearField("message_response")
            response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            response.error_response.error_message = f"not found: {exc}"
        return response

    async def ServerReflectionInfo(
        self, request_iterator: AsyncIterator[rpb.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[rpb.ServerReflectionResponse]:
        sent: set[str] = set()
        async for request in request_iterator:
            yield self._answer(request, sent)


def add_reflection(server: Any, service: ReflectionService) -> None:
    """Serve reflection under both names clients ask for: v1 and the older v1alpha."""
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(service, server)
    handler = grpc.stream_stream_rpc_method_handler(
        service.ServerReflectionInfo,
        request_deserializer=rpb.ServerReflectionRequest.FromString,
        response_serializer=rpb.ServerReflectionResponse.SerializeToString,
    )
    # `server` is the Guarded registrar (see _limits), which registers a service both ways.
    server.add_registered_method_handlers(
        "grpc.reflection.v1alpha.ServerReflection", {"ServerReflectionInfo": handler}
    )
