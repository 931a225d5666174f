from __future__ import annotations

import math

import pytest

from omi_build.manifest._yaml import parse


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a: true", True),
        ("a: False", False),
        ("a: ~", None),
        ("a:", None),
        ("a: 12", 12),
        ("a: -3", -3),
        ("a: 0o17", 15),
        ("a: 0x1f", 31),
        ("a: 1.5", 1.5),
        ("a: 1.0e3", 1000.0),
        ("a: .5", 0.5),
        ("a: 'yes'", "yes"),
        ('a: "010"', "010"),
        ("a: hello world", "hello world"),
        ("a: 3.10", 3.1),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    doc = parse(text)
    assert doc.problems == []
    assert doc.data == {"a": value}


def test_special_floats() -> None:
    doc = parse("a: [.inf, -.Inf, .nan]")
    assert doc.data["a"][0] == math.inf
    assert doc.data["a"][1] == -math.inf
    assert math.isnan(doc.data["a"][2])


@pytest.mark.parametrize("word", ["yes", "No", "ON", "off", "1e3", "010", "1:30", "0b101", "1_000"])
def test_yaml11_ambiguities_are_errors(word: str) -> None:
    doc = parse(f"a: {word}")
    assert len(doc.problems) == 1
    assert doc.problems[0].path == ("a",)
    assert word in doc.problems[0].message


def test_positions_of_values_and_keys() -> None:
    doc = parse("top:\n  list:\n    - one\n    - {k: v}\n")
    assert doc.values[("top", "list", 1, "k")] == (4, 11)
    assert doc.keys[("top", "list")] == (2, 3)
    assert doc.position(("top", "list", 7)) == (3, 5)


def test_duplicate_keys_are_reported_with_both_lines() -> None:
    doc = parse("a: 1\nb: 2\na: 3\n")
    assert doc.data == {"a": 1, "b": 2}
    (problem,) = doc.problems
    assert (problem.line, problem.col) == (3, 1)
    assert "first given on line 1" in problem.message


def test_alias_bombs_are_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    doc = parse("\n".join(lines))
    assert any("aliases expand the document past" in p.message for p in doc.problems)


def test_custom_and_python_tags_are_refused() -> None:
    doc = parse("a: !!python/object:os.system x\nb: !custom y\n")
    assert [p.path for p in doc.problems] == [("a",), ("b",)]
