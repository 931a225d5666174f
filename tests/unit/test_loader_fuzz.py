"""Property tests: whatever the text, the loader answers with located issues, never a crash."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omi_build.manifest import check_text

BASE = Path(__file__).resolve().parent

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["yes", "no", "on", "1e3", "010", "1:20", "omi/v1", "Model", "FP32", "-1"]),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "apiVersion",
            "kind",
            "metadata",
            "model",
            "python",
            "name",
            "version",
            "inputs",
            "outputs",
            "shape",
            "datatype",
            "targets",
            "serving",
            "port",
        ]
    ),
)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def _check_located(text: str) -> None:
    lines = text.splitlines() or [""]
    issues, _ = check_text(text, file="omi.yaml", base=BASE)
    for issue in issues:
        assert issue.file == "omi.yaml"
        assert 1 <= issue.line <= len(lines) + 1
        assert issue.col >= 1
        assert issue.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_structured_yaml_never_crashes(data: object) -> None:
    _check_located(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}#&*!|>'\"\t\n %@`,?0.9ye")), max_size=60))
def test_arbitrary_text_never_crashes(text: str) -> None:
    _check_located(text)
