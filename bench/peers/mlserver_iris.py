"""The iris example as an MLServer custom runtime (OIP v2 over gRPC), for bench/serve.py.

bench/serve.py writes settings.json and model-settings.json beside a copy of this file and
runs `mlserver start` there with MLServer's own venv (from requirements/bench-mlserver.lock).
The model is the example's own model.py, so every server does the same arithmetic.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class IrisRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        directory = Path(os.environ["IRIS_MODEL_DIR"])
        sys.path.insert(0, str(directory))
        from model import IrisModel  # noqa: PLC0415

        self._model = IrisModel()
        self._model.load(directory)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        measurements = NumpyCodec.decode_input(payload.inputs[0])
        answer = self._model.predict({"measurements": measurements})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                NumpyCodec.encode_output("species", answer["species"]),
                NumpyCodec.encode_output("probabilities", answer["probabilities"]),
            ],
        )
