"""The iris example trains deterministically and its class predicts what scikit-learn does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from tests.conftest import EXAMPLES

IRIS = EXAMPLES / "iris-sklearn"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"iris_{name}", IRIS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_training_reproduces_the_committed_model_byte_for_byte() -> None:
    train = _module("train")
    first = train.serialise(train.train())
    second = train.serialise(train.train())
    assert first == second
    assert first == (IRIS / "model.joblib").read_bytes()


def test_model_class_matches_scikit_learn_in_process() -> None:
    train = _module("train")
    reference = train.train()
    served = _module("model").IrisModel()
    served.load(Path(IRIS))
    batch = np.array([[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]], np.float32)
    outputs = served.predict({"measurements": batch})
    assert outputs["species"].tolist() == reference.predict(batch).tolist() == [0, 1, 2]
    assert outputs["probabilities"].shape == (3, 3)
