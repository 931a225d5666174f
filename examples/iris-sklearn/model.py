"""The iris classifier as omi-build serves it: load once, predict on a batch.

model.npz holds a scikit-learn LogisticRegression's parameters (see train.py); predicting is
the estimator's own arithmetic: softmax over X @ coef.T + intercept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class IrisModel:
    """Species (0 setosa, 1 versicolor, 2 virginica) from four measurements in cm."""

    def load(self, model_dir: Path) -> None:
        with np.load(model_dir / "model.npz", allow_pickle=False) as parameters:
            self._coef = parameters["coef"]
            self._intercept = parameters["intercept"]
            self._classes = parameters["classes"]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        measurements = inputs["measurements"].astype(np.float64, copy=False)
        scores = measurements @ self._coef.T + self._intercept
        scores -= scores.max(axis=1, keepdims=True)
        exponentials = np.exp(scores)
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        return {
            "species": self._classes[np.argmax(scores, axis=1)],
            "probabilities": probabilities.astype(np.float32),
        }
