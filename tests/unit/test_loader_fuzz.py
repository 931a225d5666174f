"""Property tests: whatever the text, the loader answers with located issues, never a crash."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omi_build.cli import main
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


# The whole `omi-build validate` path, in-process, over the iris manifest mutated: whatever the
# bytes, exit 0 or 2, every problem located, never a traceback, in bounded time.
IRIS = Path(__file__).resolve().parents[2] / "examples" / "iris-sklearn"
_SEED = (IRIS / "omi.yaml").read_bytes()
_LOCATED = re.compile(r"^[^:\n]+:\d+:\d+: ")
_HOSTILE = [
    b"\x00",
    b"\x07",
    b"\x1b[31m",
    b"\xff\xfe",
    b"\xef\xbb\xbf",
    b"[" * 500,
    b"{a: " * 200,
    b"9" * 5000,
    b"0" + b"7" * 400,
    b"B*D-3-Clause",
    b"MIT WITH ((",
    b"&a [*a, *a, *a]",
    b"*undefined",
    b"!!python/object:os.system",
    b"\t",
    b"\r",
    b"\n---\n",
    b"\xe2\x80\xae",  # right-to-left override
    b"1e999",
    b".nan",
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(_SEED)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.sampled_from(_HOSTILE) | st.binary(max_size=8))
        if action == "insert":
            data[at:at] = piece
        elif action == "replace":
            data[at : at + len(piece)] = piece
        else:
            del data[at : at + draw(st.integers(min_value=1, max_value=40))]
    return bytes(data)


def _validate_in_a_package(text: bytes) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as scratch:
        package = Path(scratch)
        shutil.copy(IRIS / "model.py", package / "model.py")
        shutil.copy(IRIS / "model.npz", package / "model.npz")
        (package / "omi.yaml").write_bytes(text)
        out, err = io.StringIO(), io.StringIO()
        code = main(["validate", str(package)], out=out, err=err)
        return code, err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_validate_answers_every_mutated_manifest_with_located_problems(text: bytes) -> None:
    started = time.monotonic()
    code, err = _validate_in_a_package(text)
    assert time.monotonic() - started < 10
    assert "Traceback" not in err
    assert code in {0, 2}, err
    if code == 2:
        lines = err.splitlines()
        assert lines[-1].startswith("error: ")
        assert all(_LOCATED.match(line) for line in lines[:-1]), err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"a: " + b"[" * 400 + b"]" * 400, "nested deeper than"),
        (b"a:\n" + b"".join(b" " * i + b"k:\n" for i in range(1, 400)), "nested deeper than 64 levels"),
        (b"apiVersion: " + b"9" * 5000, "a number of 5,000 digits is too large"),
        (_SEED.replace(b"name: iris", b"name: ir\x00is"), "control character U+0000"),
        (_SEED.replace(b"BSD-3-Clause", b"B*D-3-Clause"), "'B*D-3-Clause' is not a valid SPDX expression"),
        (_SEED.replace(b"name: iris", b"name: ir\xffis"), "not UTF-8 text"),
        (_SEED + b"#" * (3 * 2**20), "the limit is 2 MiB"),
        (_SEED + b"#" * (9 * 2**20), "the limit is 2 MiB"),
    ],
)
def test_hostile_manifests_get_a_located_error(text: bytes, expected: str) -> None:
    code, err = _validate_in_a_package(text)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err


def test_a_large_literal_example_is_not_mistaken_for_an_alias_bomb() -> None:
    rows = "\n".join(f"          - [5.1, 3.5, 1.4, 0.{i % 10}]" for i in range(5000))
    text = _SEED.decode().replace(
        "        measurements: [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]",
        "        measurements:\n" + rows,
    )
    budget = "aliases expand"
    issues, _ = check_text(text, file="omi.yaml", base=IRIS)
    assert not [issue for issue in issues if budget in issue.message]
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    issues, _ = check_text(bomb, file="omi.yaml", base=IRIS)
    assert any(budget in issue.message for issue in issues)
