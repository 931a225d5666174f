"""Files shipped with omi-build: the JSON Schema and the .proto files."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

# In a wheel, schemas/ and protos/ are package data under omi_build/_data; in a source
# checkout (editable install) they sit at the repository root.
_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def data_path(kind: str) -> Path:
    """The directory holding `kind` ('schemas' or 'protos')."""
    packaged = Path(__file__).resolve().parent / "_data" / kind
    if packaged.is_dir():
        return packaged
    return _CHECKOUT_ROOT / kind


def schema_path() -> Path:
    return data_path("schemas") / "omi.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The omi.yaml JSON Schema (draft 2020-12), parsed once per process."""
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    return loaded
