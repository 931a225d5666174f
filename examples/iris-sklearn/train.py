"""Train the iris classifier with scikit-learn and export it, byte for byte the same every run.

The data is the iris set bundled with scikit-learn (no download) and the solver is
deterministic. What a fitted LogisticRegression needs to predict is its coefficients,
intercepts and class labels, so that is what model.npz holds: the image then needs numpy, not
scikit-learn and SciPy (200 MB less, and a start-up in a fraction of a second), and model.py
predicts exactly what the estimator does (tests/unit/test_iris_example.py checks it).

    python train.py            # writes model.npz next to this script
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def train() -> LogisticRegression:
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=0)
    model.fit(features.astype("float32"), labels)
    return model


def export(model: LogisticRegression) -> bytes:
    """The estimator's parameters as an .npz whose zip entries carry a fixed time stamp."""
    arrays = {
        "coef": model.coef_.astype(np.float64),
        "intercept": model.intercept_.astype(np.float64),
        "classes": model.classes_.astype(np.int64),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def main() -> int:
    target = Path(__file__).with_name("model.npz")
    data = export(train())
    temporary = target.with_suffix(".npz.tmp")
    temporary.write_bytes(data)
    temporary.replace(target)  # never leave a half-written model behind
    print(f"wrote {target} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
