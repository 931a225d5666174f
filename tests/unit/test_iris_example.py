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
    first = train.export(train.train())
    assert first == train.export(train.train())
    assert first == (IRIS / "model.npz").read_bytes()


def test_served_model_predicts_exactly_what_scikit_learn_does() -> None:
    reference = _module("train").train()
    served = _module("model").IrisModel()
    served.load(Path(IRIS))
    grid = np.random.default_rng(7).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(2000, 4))
    batch = grid.astype(np.float32)
    outputs = served.predict({"measurements": batch})
    assert outputs["species"].tolist() == reference.predict(batch).tolist()
    np.testing.assert_allclose(outputs["probabilities"], reference.predict_proba(batch), atol=1e-6)
    assert outputs["species"].dtype == np.int64
