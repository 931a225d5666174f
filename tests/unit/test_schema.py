"""The schema is the contract: valid draft 2020-12, fully documented, closed, mirrored in types."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator

from omi_build.manifest import types
from omi_build.resources import schema


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


def test_dataclass_defaults_match_schema_defaults() -> None:
    defs = schema()["$defs"]
    assert types.Serving().port == defs["serving"]["properties"]["port"]["default"]
    assert list(types.Serving().protocols) == defs["serving"]["properties"]["protocols"]["default"]
    batching = defs["serving"]["properties"]["batching"]["properties"]
    assert types.Batching().max_batch_size == batching["max_batch_size"]["default"]
    assert types.Security().user == defs["security"]["properties"]["user"]["default"]
    assert types.Build().compression == defs["build"]["properties"]["compression"]["default"]
