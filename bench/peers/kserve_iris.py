"""The iris example served by KServe's ModelServer (gRPC, OIP v2), for bench/serve.py.

Run with KServe's own venv (make bench installs it from requirements/bench-kserve.lock):
    python kserve_iris.py MODEL_DIR --grpc_port P --http_port Q
The model is the example's own model.py, so every server does the same arithmetic.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

MODEL_DIR = Path(sys.argv.pop(1))
sys.path.insert(0, str(MODEL_DIR))
from model import IrisModel  # noqa: E402


class Iris(kserve.Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("iris-classifier")
        self._model = IrisModel()
        self._model.load(MODEL_DIR)
        self.ready = True

    async def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> Any:
        answer = self._model.predict({"measurements": payload.inputs[0].as_numpy()})
        outputs = [
            InferOutput("species", list(answer["species"].shape), "INT64", answer["species"]),
            InferOutput(
                "probabilities", list(answer["probabilities"].shape), "FP32", answer["probabilities"]
            ),
        ]
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
        )


if __name__ == "__main__":
    kserve.ModelServer().start([Iris()])
