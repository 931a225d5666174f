"""Train the iris classifier and write model.joblib, byte for byte the same on every run.

The data is the iris set bundled with scikit-learn (no download). The solver is deterministic
and the pickle protocol is fixed, so the same scikit-learn version always writes the same file:

    python train.py            # writes model.joblib next to this script
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

PICKLE_PROTOCOL = 5


def train() -> LogisticRegression:
    features, labels = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, random_state=0)
    model.fit(features.astype("float32"), labels)
    return model


def serialise(model: LogisticRegression) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, protocol=PICKLE_PROTOCOL)
    return buffer.getvalue()


def main() -> int:
    target = Path(__file__).with_name("model.joblib")
    data = serialise(train())
    temporary = target.with_suffix(".joblib.tmp")
    temporary.write_bytes(data)
    temporary.replace(target)  # never leave a half-written model behind
    print(f"wrote {target} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
