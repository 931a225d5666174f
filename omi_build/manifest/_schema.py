"""JSON Schema validation whose errors speak the manifest author's language."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from omi_build.resources import schema

from ._report import Reporter, describe, suggest
from ._yaml import Path

_VOCABULARY = {
    "object": "a mapping",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


@cache
def validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _expected(types: Any) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_VOCABULARY.get(name, name) for name in names)


def _report(error: ValidationError, report: Reporter, skip: set[Path]) -> None:
    path: Path = tuple(error.absolute_path)
    if path in skip:
        return  # the YAML stage already explained this value
    kind = error.validator
    value = error.instance
    sub = error.schema if isinstance(error.schema, dict) else {}
    hint = sub.get("x-hint")

    if "propertyNames" in error.absolute_schema_path:
        # Raised for a key, with the key as the instance and the mapping's path.
        key_path = (*path, str(value))
        report.add(key_path, f"'{value}' is not a valid name: {hint or error.message}", at_key=True)
        return
    if kind == "required":
        for name in error.validator_value:
            if isinstance(value, dict) and name not in value:
                where = f"under '{path[-1]}'" if path else "at the top level"
                report.add((*path, name), f"required field is missing; add '{name}:' {where}")
        return
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = list(sub.get("properties", {}))
        for key in value:
            if key in allowed:
                continue
            hint_text = suggest(key, allowed) or (
                f"; allowed here: {', '.join(allowed)}" if allowed else ""
            )
            report.add((*path, key), f"unknown field{hint_text}", at_key=True)
        return
    if kind == "type":
        message = f"expected {_expected(error.validator_value)}, got {describe(value)}"
        source = report.doc.sources.get(path)
        if "string" in error.validator_value and source is not None:
            message += f'; write "{source}" in quotes'
        report.add(path, message)
        return
    if kind == "enum":
        choices = [str(choice) for choice in error.validator_value]
        did_you_mean = suggest(str(value), choices)
        report.add(path, f"'{value}' is not one of {', '.join(choices)}{did_you_mean}")
        return
    if kind == "const":
        report.add(path, f"must be '{error.validator_value}', not {describe(value)}")
        return
    if kind == "pattern":
        report.add(path, f"'{value}' is not valid: {hint}" if hint else error.message)
        return
    if kind in {"minItems", "minProperties", "minLength"} and error.validator_value == 1:
        report.add(path, "must not be empty")
        return
    if kind == "minItems":
        report.add(path, f"needs at least {error.validator_value} items")
        return
    if kind == "maxItems":
        report.add(path, f"has {len(value)} items; at most {error.validator_value} are allowed")
        return
    if kind == "maxLength":
        report.add(path, f"is longer than {error.validator_value} characters")
        return
    if kind == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                report.add((*path, index), f"{describe(item)} is listed twice; remove one")
            else:
                seen.append(item)
        return
    if kind == "not":
        inner = error.validator_value
        message = (inner.get("x-hint") if isinstance(inner, dict) else None) or sub.get("x-hint")
        report.add(path, message or error.message, at_key=bool(path))
        return
    if kind in {"oneOf", "anyOf"} and error.context:
        best = min(error.context, key=lambda e: (len(e.absolute_path), str(e.message)))
        _report(best, report, skip)
        return
    report.add(path, error.message)


def check(data: Any, report: Reporter) -> None:
    """Report every schema violation in `data`."""
    skip = {problem.path for problem in report.doc.problems}
    for error in validator().iter_errors(data):
        _report(error, report, skip)
