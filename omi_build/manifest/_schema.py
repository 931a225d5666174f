"""JSON Schema validation whose errors speak the manifest author's language."""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from omi_build.resources import schema

from ._report import Reporter, describe, field_name, suggest
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

# Names people reach for from numpy, torch and Triton's config files.
_ALIASES = {
    "FLOAT": "FP32",
    "FLOAT32": "FP32",
    "FLOAT64": "FP64",
    "DOUBLE": "FP64",
    "FLOAT16": "FP16",
    "HALF": "FP16",
    "TYPE_FP32": "FP32",
    "STRING": "BYTES",
    "STR": "BYTES",
    "TYPE_STRING": "BYTES",
    "BOOLEAN": "BOOL",
    "INT": "INT64",
    "LONG": "INT64",
    "BYTE": "UINT8",
    "X86_64": "amd64",
    "AARCH64": "arm64",
    "GPU": "cuda",
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
    value: Any = error.instance
    rule: Any = error.validator_value
    sub = error.schema if isinstance(error.schema, dict) else {}
    hint = sub.get("x-hint")

    if "propertyNames" in error.absolute_schema_path:
        # Raised for a key, with the key as the instance and the mapping's path.
        key_path = (*path, str(value))
        report.add(key_path, f"'{value}' is not a valid name: {hint or error.message}", at_key=True)
        return
    if kind == "required":
        for name in rule:
            if isinstance(value, dict) and name not in value:
                where = f"under {field_name(path)}" if path else "at the top level"
                report.add((*path, name), f"required field is missing; add '{name}:' {where}")
        return
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = list(sub.get("properties", {}))
        for key in value:
            if key in allowed:
                continue
            hint_text = suggest(key, allowed) or (f"; allowed here: {', '.join(allowed)}" if allowed else "")
            report.add((*path, key), f"unknown field{hint_text}", at_key=True)
        return
    if kind == "type" and not path:
        report.add(
            path,
            "the manifest must be a mapping of sections (apiVersion, kind, metadata, model, ...), "
            f"not {describe(value)}",
        )
        return
    if kind == "type":
        message = f"expected {_expected(rule)}, got {describe(value)}"
        source = report.doc.sources.get(path)
        if "string" in rule and source is not None:
            message += f'; write "{source}" in quotes'
        report.add(path, message)
        return
    if kind == "enum":
        choices = [str(choice) for choice in rule]
        alias = _ALIASES.get(str(value).upper())
        did_you_mean = f"; did you mean '{alias}'?" if alias in choices else suggest(str(value), choices)
        report.add(path, f"'{value}' is not one of {', '.join(choices)}{did_you_mean}")
        return
    if kind == "const":
        report.add(path, f"must be '{rule}', not {describe(value)}")
        return
    if kind == "pattern":
        report.add(path, f"'{value}' is not valid: {hint}" if hint else error.message)
        return
    if kind in {"minItems", "minProperties", "minLength"} and rule == 1:
        report.add(path, "must not be empty")
        return
    if kind == "minItems":
        report.add(path, f"needs at least {rule} items")
        return
    if kind == "maxItems":
        report.add(path, f"has {len(value)} items; at most {rule} are allowed")
        return
    if kind == "maxLength":
        report.add(path, f"is longer than {rule} characters")
        return
    if kind == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                shown = f"'{item}'" if isinstance(item, str) else describe(item)
                report.add((*path, index), f"{shown} is listed twice; remove one")
            else:
                seen.append(item)
        return
    if kind == "not":
        inner = rule
        not_hint = (inner.get("x-hint") if isinstance(inner, dict) else None) or hint
        report.add(path, not_hint or error.message, at_key=bool(path))
        return
    if kind in {"oneOf", "anyOf"} and error.context:
        # A branch the value fits by type says what is wrong with it (0 is below a minimum);
        # when it fits none, the property's own hint says what it may be.
        fitting = [e for e in error.context if e.validator not in {"type", "const", "enum"}]
        own_hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
        if not fitting and own_hint:
            report.add(path, own_hint)
            return
        best = min(fitting or error.context, key=lambda e: (len(e.absolute_path), str(e.message)))
        _report(best, report, skip)
        return
    report.add(path, error.message)


def check(data: Any, report: Reporter) -> None:
    """Report every schema violation in `data`."""
    skip = {problem.path for problem in report.doc.problems}
    for error in validator().iter_errors(data):
        _report(error, report, skip)
