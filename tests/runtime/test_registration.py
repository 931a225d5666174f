"""How the server's methods are registered with grpcio (no sockets: a stand-in server)."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from omi_build.runtime._limits import Guarded
from omi_build.runtime._oip import CHECKS_ITSELF, CODECS
from omi_build.runtime._wire import InferRequest
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as pb
from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc, health_pb2_grpc

Details = namedtuple("Details", "method invocation_metadata")  # noqa: PYI024 - grpc's shape


class StandIn:
    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.by_name: dict[str, list[str]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.by_name[service] = sorted(handlers)

    def find(self, method: str) -> Any:
        for handler in self.generic:
            found = handler.service(Details(method, ()))
            if found is not None:
                return found
        return None


def test_only_the_model_calls_are_registered_by_name_and_every_method_is_found() -> None:
    server = StandIn()
    hot = frozenset({("inference.GRPCInferenceService", "ModelInfer")})
    guarded = Guarded(server, CODECS, CHECKS_ITSELF, hot)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer(), guarded
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_pb2_grpc.HealthServicer(), guarded)
    # grpcio waits on one future per method registered by name, on every call
    assert server.by_name == {"inference.GRPCInferenceService": ["ModelInfer"]}
    for method in (
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
        "/inference.GRPCInferenceService/ServerReady",
        "/grpc.health.v1.Health/Check",
    ):
        assert server.find(method) is not None, method
    infer = server.find("/inference.GRPCInferenceService/ModelInfer")
    request = pb.ModelInferRequest(model_name="m")
    assert type(infer.request_deserializer(request.SerializeToString())) is InferRequest
    # a request that does not decode reaches ModelInfer as something else, which it refuses
    assert type(infer.request_deserializer(b"\xff\xff\xff")) is not InferRequest
