"""The schema is the contract: valid draft 2020-12, fully documented, closed, mirrored in types."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from omi_build.manifest import types
from omi_build.resources import schema
from omi_build.suites import DEFAULT_SUITE, SUITES


def _objects(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{path}/{index}")


def test_schema_is_valid_draft_2020_12_with_id() -> None:
    Draft202012Validator.check_schema(schema())
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema()["$id"].endswith("omi.schema.json")


def test_every_object_is_closed() -> None:
    open_objects = [
        path
        for path, node in _objects(schema())
        if "additionalProperties" not in node and "properties" in node
    ]
    assert open_objects == []


def test_every_field_has_a_description_and_an_example() -> None:
    missing = []
    for path, node in _objects(schema()):
        for name, prop in node.get("properties", {}).items():
            resolved = prop
            if "$ref" in prop:
                resolved = schema()["$defs"][prop["$ref"].rsplit("/", 1)[1]]
            if "description" not in resolved:
                missing.append(f"{path}/{name}: description")
            documented = "examples" in resolved or "const" in resolved or "properties" in resolved
            if not documented and resolved.get("type") != "array":
                missing.append(f"{path}/{name}: examples")
    assert missing == []


def _section_classes() -> dict[str, type]:
    return {
        "#": types.Manifest,
        "metadata": types.Metadata,
        "model": types.Model,
        "tensor": types.Tensor,
        "example": types.Example,
        "python": types.Python,
        "system": types.System,
        "target": types.Target,
        "serving": types.Serving,
        "security": types.Security,
        "build": types.Build,
    }


def test_every_schema_property_has_a_dataclass_field() -> None:
    renamed = {"apiVersion": "api_version"}
    defs = schema()["$defs"]
    for section, cls in _section_classes().items():
        node = schema() if section == "#" else defs[section]
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in node["properties"]:
            assert renamed.get(name, name) in fields, f"{cls.__name__} lacks {name}"
    nested = {
        ("serving", "batching"): types.Batching,
        ("serving", "timeouts"): types.Timeouts,
        ("serving", "concurrency"): types.Concurrency,
        ("security", "licenses"): types.Licenses,
        ("security", "signing"): types.Signing,
        ("build", "base"): types.Base,
    }
    for (section, name), cls in nested.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(defs[section]["properties"][name]["properties"]) <= fields


def _defaults(node: dict[str, Any], cls: type) -> Iterator[tuple[str, Any, Any]]:
    """(field, the schema's default, the dataclass's) for every property that has a default,
    nested objects included."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for name, prop in node.get("properties", {}).items():
        if name not in fields:
            continue  # apiVersion: a constant, not a setting
        field = fields[name]
        if "default" in prop:
            if field.default is not dataclasses.MISSING:
                ours = field.default
            elif field.default_factory is not dataclasses.MISSING:
                ours = field.default_factory()
            else:
                ours = dataclasses.MISSING
            yield f"{cls.__name__}.{name}", prop["default"], ours
        kinds = [k for k in typing.get_args(hints[name]) or [hints[name]] if dataclasses.is_dataclass(k)]
        if kinds and "properties" in prop:  # a nested object (or one that may be absent)
            yield from _defaults(prop, typing.cast("type", kinds[0]))


def _plain(value: Any) -> Any:
    """A dataclass default as JSON would spell it (tuples as lists, dataclasses as objects)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def test_dataclass_defaults_match_schema_defaults() -> None:
    defs = schema()["$defs"]
    checked = 0
    for section, cls in _section_classes().items():
        node = schema() if section == "#" else defs[section]
        for name, theirs, ours in _defaults(node, cls):
            if name == "Manifest.targets":
                continue  # held in types.DEFAULT_TARGETS, checked below
            assert ours is not dataclasses.MISSING, f"{name}: the schema has a default, the dataclass none"
            assert _plain(ours) == theirs, name
            checked += 1
    everywhere = sum(
        1 for _, node in _objects(schema()) for p in node.get("properties", {}).values() if "default" in p
    )
    assert checked == everywhere - 1  # every default the schema has (but targets), not a handful
    targets = schema()["properties"]["targets"]["default"]
    parsed = types.from_data(Path("omi.yaml"), {**_minimal(), "targets": types.DEFAULT_TARGETS}).targets
    assert {t.name: {"accelerator": t.accelerator, "platforms": list(t.platforms)} for t in parsed} == targets


def test_schema_suites_are_the_suite_table() -> None:
    debian = schema()["$defs"]["build"]["properties"]["base"]["properties"]["debian"]
    assert debian["enum"] == list(SUITES)
    assert debian["default"] == DEFAULT_SUITE


def _minimal() -> dict[str, Any]:
    return {
        "apiVersion": "omi/v1",
        "kind": "Model",
        "metadata": {"name": "m", "version": "1.0.0"},
        "model": {"entrypoint": "m.py:M", "files": ["m.py"], "inputs": [], "outputs": []},
        "python": {"version": "3.11"},
    }


def test_cuda_versions_are_major_dot_minor_with_two_digit_minors() -> None:
    import re  # noqa: PLC0415

    pattern = re.compile(schema()["$defs"]["target"]["properties"]["cuda"]["pattern"])
    assert [v for v in ("11.8", "12.4", "12.10", "13.0") if not pattern.search(v)] == []
    assert [v for v in ("12", "12.4.1", "9.2", "12.100", "12.x") if pattern.search(v)] == []
