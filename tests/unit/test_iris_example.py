"""The iris example trains reproducibly enough to keep its promises, and its class predicts
exactly what scikit-learn does with the committed parameters.

Training is not byte-stable across machines: OpenBLAS picks its kernel by CPU (Prescott,
Haswell, SkylakeX...), and the solver's floating-point sums then round differently, moving
the coefficients by up to about 3e-3 and the probabilities by up to about 3e-4. So these
tests never compare retrained bytes with the committed model.npz; they check that retraining
lands within a stated tolerance of it, and that the served arithmetic equals scikit-learn's
for the committed parameters.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import yaml

from tests.conftest import EXAMPLES

IRIS = EXAMPLES / "iris-sklearn"
# Retraining on another CPU moves a parameter by up to ~0.04 (the intercept near -12, measured
# under Prescott against Haswell; SkylakeX moves them ~3e-3): 1% or 0.05, within 0.05 + 1%.
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE = 1e-2, 5e-2


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"iris_{name}", IRIS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _parameters(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _served(directory: Path) -> object:
    served = _module("model").IrisModel()
    served.load(directory)
    return served


def test_training_is_deterministic_on_one_machine() -> None:
    train = _module("train")
    assert train.export(train.train()) == train.export(train.train())


def test_retraining_lands_within_tolerance_of_the_committed_model() -> None:
    train = _module("train")
    retrained = _parameters(train.export(train.train()))
    committed = _parameters((IRIS / "model.npz").read_bytes())
    assert set(retrained) == set(committed) == {"coef", "intercept", "classes"}
    assert retrained["classes"].tolist() == committed["classes"].tolist()
    for name in ("coef", "intercept"):
        assert retrained[name].shape == committed[name].shape
        np.testing.assert_allclose(
            retrained[name], committed[name], atol=ABSOLUTE_TOLERANCE, rtol=RELATIVE_TOLERANCE
        )


def test_retrained_model_passes_the_manifests_examples(tmp_path: Path) -> None:
    """What `omi-build test` checks of an image built from a model retrained on this machine."""
    train = _module("train")
    (tmp_path / "model.npz").write_bytes(train.export(train.train()))
    served = _served(tmp_path)
    manifest = yaml.safe_load((IRIS / "omi.yaml").read_text(encoding="utf-8"))
    examples = manifest["model"]["examples"]
    assert examples
    for example in examples:
        batch = np.asarray(example["inputs"]["measurements"], dtype=np.float32)
        outputs = served.predict({"measurements": batch})  # type: ignore[attr-defined]
        assert outputs["species"].tolist() == example["outputs"]["species"]
        worst = np.abs(outputs["probabilities"] - np.asarray(example["outputs"]["probabilities"])).max()
        assert worst <= example["tolerance"]


def test_served_model_predicts_exactly_what_scikit_learn_does() -> None:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - dev dependency only

    committed = _parameters((IRIS / "model.npz").read_bytes())
    reference = LogisticRegression()
    reference.coef_ = committed["coef"]
    reference.intercept_ = committed["intercept"]
    reference.classes_ = committed["classes"]
    reference.n_features_in_ = committed["coef"].shape[1]
    served = _served(IRIS)
    grid = np.random.default_rng(7).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(2000, 4))
    batch = grid.astype(np.float32)
    outputs = served.predict({"measurements": batch})  # type: ignore[attr-defined]
    assert outputs["species"].tolist() == reference.predict(batch).tolist()
    np.testing.assert_allclose(outputs["probabilities"], reference.predict_proba(batch), atol=1e-6)
    assert outputs["species"].dtype == np.int64
