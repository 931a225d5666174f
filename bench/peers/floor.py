"""The floor: a bare grpc.aio ModelInfer handler that answers a fixed, pre-built response.

No checks, no model, no batching: what a Python gRPC server costs per request before it does
anything. bench/serve.py runs it inside the omi-build image (`python -c`, with the image's
Python, grpcio, protobuf and OIP stubs), on the port of the image's config.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import grpc
from omi_runtime.protocol import grpc_predict_v2_pb2 as pb
from omi_runtime.protocol import grpc_predict_v2_pb2_grpc as pb_grpc


class Floor(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self._answer = pb.ModelInferResponse(model_name="iris-classifier", model_version="1.0.0")
        self._answer.outputs.add(name="species", datatype="INT64", shape=[1])
        self._answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, 3])
        self._answer.raw_output_contents.extend([bytes(8), bytes(12)])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        return self._answer

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)


async def main(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(os.environ["PSC_MODEL_PORT"])))
