"""What a layer holds, package by package: kept with the layer's cache record, so a cache hit
can still say what is in it (for the SBOM) without unpacking anything again.

Licenses are recorded as found, not judged: the `License:` fields of a Debian machine-readable
copyright file, or a wheel's `License-Expression`, else its `License` line and its license
classifiers. An empty tuple means the package states none in a form read here.
"""

from __future__ import annotations

import email.parser
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from omi_build.lock import DebPackage, Wheel

from ._unpack import Unpacked

_LICENSE_FIELD = re.compile(r"^License:[ \t]*(\S[^\n]*)$", re.MULTILINE)
_DOC = "usr/share/doc/"
_DOC_DEPTH = 4  # usr/share/doc/<package>
_NOT_A_LICENSE = frozenset({"OSI Approved", "Other/Proprietary License"})  # classifier groups
_SHORT_LICENSE = 100  # a License line longer than this is the licence's text, not its name


@dataclass(frozen=True, kw_only=True, slots=True)
class Component:
    kind: Literal["deb", "wheel"]
    name: str
    version: str
    sha256: str  # of the archive it came from
    licenses: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "licenses": list(self.licenses),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Component:
        kind = raw["kind"]
        licenses = raw["licenses"]
        if (
            kind not in {"deb", "wheel"}
            or not isinstance(licenses, list)
            or not all(isinstance(x, str) for x in licenses)
        ):
            msg = f"not an inventory entry: {raw!r}"
            raise ValueError(msg)
        return cls(
            kind=kind,
            name=str(raw["name"]),
            version=str(raw["version"]),
            sha256=str(raw["sha256"]),
            licenses=tuple(licenses),
        )


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in values if v.strip()))


def debian_licenses(copyright_text: str) -> tuple[str, ...]:
    """The licence names a DEP-5 copyright file declares, in order; () for a free-form one."""
    if not copyright_text.lstrip().startswith("Format:"):
        return ()
    return _unique(_LICENSE_FIELD.findall(copyright_text))


def wheel_licenses(metadata_text: str) -> tuple[str, ...]:
    """The licence a wheel's METADATA declares (core metadata 2.4's expression first)."""
    message = email.parser.Parser().parsestr(metadata_text, headersonly=True)
    if expression := message.get("License-Expression"):
        return _unique([str(expression)])
    found = []
    declared = str(message.get("License") or "").strip()
    if declared and "\n" not in declared and len(declared) <= _SHORT_LICENSE:
        found.append(declared)
    for classifier in message.get_all("Classifier") or []:
        parts = [p.strip() for p in str(classifier).split("::")]
        if parts[0] == "License" and len(parts) > 1 and parts[-1] not in _NOT_A_LICENSE:
            found.append(parts[-1])
    return _unique(found)


def _text(unpacked: Unpacked, test: Any) -> str:
    for entry in unpacked.entries:
        if entry.kind == "file" and test(entry.path):
            return entry.data.decode("utf-8", "replace")
    return ""


def debian_copyrights(unpacked: Iterable[Unpacked]) -> dict[str, str]:
    """Each documentation folder's copyright text, by folder name, across the packages of a
    layer; a folder that is a link to another (libncursesw6 -> libtinfo6) maps to its target's."""
    texts: dict[str, str] = {}
    links: dict[str, str] = {}
    for each in unpacked:
        for entry in each.entries:
            parts = entry.path.split("/")
            if entry.path.startswith(_DOC) and len(parts) == _DOC_DEPTH + 1 and parts[-1] == "copyright":
                texts[parts[_DOC_DEPTH - 1]] = entry.data.decode("utf-8", "replace")
            elif entry.path.startswith(_DOC) and len(parts) == _DOC_DEPTH and entry.kind == "symlink":
                links[parts[-1]] = entry.target.rstrip("/").rsplit("/", 1)[-1]
    for name, target in links.items():
        if name not in texts and target in texts:
            texts[name] = texts[target]
    return texts


def of_deb(package: DebPackage, copyrights: dict[str, str]) -> Component:
    """The package's component, its licences read from the layer's `debian_copyrights`."""
    text = copyrights.get(package.name, "")
    return Component(
        kind="deb", name=package.name, version=package.version, sha256=package.sha256,
        licenses=debian_licenses(text),
    )  # fmt: skip


def of_wheel(wheel: Wheel, unpacked: Unpacked) -> Component:
    text = _text(
        unpacked, lambda path: path.endswith(".dist-info/METADATA") and path.count(".dist-info/") == 1
    )
    return Component(
        kind="wheel", name=wheel.name, version=wheel.version, sha256=wheel.sha256,
        licenses=wheel_licenses(text),
    )  # fmt: skip
