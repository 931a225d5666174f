"""The iris classifier as omi-build serves it: load once, predict on a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np


class IrisModel:
    """Species (0 setosa, 1 versicolor, 2 virginica) from four measurements in cm."""

    def load(self, model_dir: Path) -> None:
        self._model: Any = joblib.load(model_dir / "model.joblib")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        measurements = inputs["measurements"].astype(np.float32, copy=False)
        return {
            "species": self._model.predict(measurements).astype(np.int64),
            "probabilities": self._model.predict_proba(measurements).astype(np.float32),
        }
