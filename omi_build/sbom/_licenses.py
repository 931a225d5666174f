"""Licence names as packages state them, turned into SPDX identifiers where that is exact.

Debian's machine-readable copyright files use DEP-5's short names ('GPL-2+', 'Expat'); SPDX
spells those 'GPL-2.0-or-later' and 'MIT'. A name with no exact SPDX identifier becomes a
`LicenseRef-` of its own, declared with its original text, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

_GNU = re.compile(r"^(A|L)?GPL-(\d)(?:\.(\d))?(\+)?$", re.IGNORECASE)
_DEP5 = {  # DEP-5's short names whose SPDX identifier differs (the rest match or are handled above)
    "expat": "MIT",
    "artistic": "Artistic-1.0",
    "apache-2": "Apache-2.0",
    "mpl-1.1": "MPL-1.1",
    "mpl-2.0": "MPL-2.0",
    "psf-2": "PSF-2.0",
    "python": "PSF-2.0",
    "zlib": "Zlib",
}
_REF_CHARACTERS = re.compile(r"[^A-Za-z0-9.-]+")
_IS_REF = re.compile(r"LicenseRef-[A-Za-z0-9.-]+")


@cache
def _licensing() -> Any:
    from license_expression import get_spdx_licensing  # noqa: PLC0415 - 100 ms, only when used

    return get_spdx_licensing()


def license_ref(name: str) -> str:
    return "LicenseRef-" + (_REF_CHARACTERS.sub("-", name).strip("-") or "unnamed")


# name -> spdx_id(name), found by this process or handed over by preload(): a build keeps
# them in its cache, since building the SPDX parser and parsing take a no-op build's time.
_FOUND: dict[str, str | None] = {}


def preload(found: Mapping[str, Any]) -> None:
    """Take spdx_id answers remembered from earlier runs (as known_ids() gave them)."""
    for name, answer in found.items():
        if answer is None or isinstance(answer, str):
            _FOUND.setdefault(name, answer)


def known_ids() -> dict[str, str | None]:
    return dict(_FOUND)


def spdx_id(name: str) -> str | None:
    """The SPDX expression that says exactly `name`, or None when there is none."""
    name = name.strip()
    if name not in _FOUND:
        _FOUND[name] = _spdx_id(name)
    return _FOUND[name]


def _spdx_id(name: str) -> str | None:
    if match := _GNU.match(name):
        family, major, minor, later = match.groups()
        prefix = f"{(family or '').upper()}GPL"
        return f"{prefix}-{major}.{minor or '0'}-{'or-later' if later else 'only'}"
    if (mapped := _DEP5.get(name.lower())) is not None:
        return mapped
    try:  # the library's own validate() can raise on odd input; parsing strictly does the same job
        parsed = _licensing().parse(name, validate=True, strict=True)
    except Exception:  # noqa: BLE001 - ExpressionError and the parser's internal errors alike
        return None
    return None if parsed is None else str(parsed.render())


def expression(names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """One SPDX expression for all of a package's licences (each applies to some of its files,
    so they combine with AND), and the LicenseRefs it uses with their original names. No
    licence found is NOASSERTION."""
    if not names:
        return "NOASSERTION", {}
    parts, refs = [], {}
    for name in names:
        found = spdx_id(name)
        if _IS_REF.fullmatch(name.strip()):
            found = name.strip()  # already an SPDX licence reference; declared with the rest
            refs[found] = found
        elif found is None:
            found = license_ref(name)
            refs[found] = name
        parts.append(f"({found})" if " " in found and len(names) > 1 else found)
    return " AND ".join(dict.fromkeys(parts)), refs
