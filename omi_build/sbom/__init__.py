"""The SBOM of each platform image, exact rather than scanned: from the lock (every Debian
package and wheel, with the sha256 of the file it came from), the layers' inventories (their
licences), the model files' digests, the server runtime and omi-build itself.

SPDX 2.3 JSON and CycloneDX 1.6 JSON. Byte-reproducible: the document namespace and serial
number derive from the image's digest and the creation time from the source date epoch.

>>> document = spdx(contents)  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from omi_build import __version__
from omi_build.digests import canonical

from ._licenses import expression, known_ids, preload, spdx_id

__all__ = [
    "CYCLONEDX_TYPE", "SPDX_TYPE", "Component", "Contents", "cyclonedx", "known_ids", "license_expression",
    "preload", "spdx",
]  # fmt: skip


def license_expression(names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """A package's licences as one SPDX expression, as the SBOM writes it (and the LicenseRefs
    it declares), for the security policy to judge exactly what the SBOM says."""
    return expression(names)


SPDX_TYPE = "application/spdx+json"
CYCLONEDX_TYPE = "application/vnd.cyclonedx+json"
FORMATS = {"spdx": SPDX_TYPE, "cyclonedx": CYCLONEDX_TYPE}
_SUITE_DISTRO = "debian-12"


@dataclass(frozen=True, kw_only=True, slots=True)
class Component:
    """One package in the image: a Debian package or a wheel, pinned by its archive's sha256."""

    kind: Literal["deb", "wheel"]
    name: str
    version: str
    sha256: str
    file: str  # the .deb's archive path or the wheel's file name
    licenses: tuple[str, ...] = ()
    architecture: str = ""  # Debian's; a wheel's is in its file name

    @property
    def purl(self) -> str:
        if self.kind == "deb":
            version = quote(self.version, safe="")
            return f"pkg:deb/debian/{self.name}@{version}?arch={self.architecture}&distro={_SUITE_DISTRO}"
        return f"pkg:pypi/{self.name.lower().replace('_', '-')}@{quote(self.version, safe='')}"

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind, self.name, self.architecture, self.version)


@dataclass(frozen=True, kw_only=True, slots=True)
class Contents:
    """Everything one platform image holds, as the build knows it."""

    name: str
    version: str
    platform: str  # linux/amd64
    digest: str  # the image manifest's
    epoch: int
    components: tuple[Component, ...]
    model_files: dict[str, str]  # path in the image -> sha256 hex
    runtime_layer: str  # the server runtime layer's digest

    @property
    def architecture(self) -> str:
        return self.platform.split("/")[1]

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")

    @property
    def image_purl(self) -> str:
        return f"pkg:oci/{self.name}@{quote(self.digest, safe='')}?arch={self.architecture}"

    def sorted_components(self) -> list[Component]:
        return sorted(self.components, key=lambda c: c.key)


def _created(epoch: int) -> str:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spdx_ref(*parts: str) -> str:
    return "SPDXRef-" + "-".join("".join(c if c.isalnum() or c in ".-" else "-" for c in p) for p in parts)


def spdx(contents: Contents) -> bytes:
    """The image's SPDX 2.3 JSON document."""
    root = "SPDXRef-Image"
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": root,
            "name": contents.name,
            "versionInfo": contents.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": contents.hex}],
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": contents.image_purl,
                }
            ],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }
    ]
    relationships = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relatedSpdxElement": root, "relationshipType": "DESCRIBES"}
    ]
    extracted: dict[str, str] = {}
    for component in contents.sorted_components():
        ref = _spdx_ref(component.kind, component.name, component.architecture, component.version)
        declared, refs = expression(component.licenses)
        extracted.update(refs)
        packages.append(
            {
                "SPDXID": ref,
                "name": component.name,
                "versionInfo": component.version,
                "packageFileName": component.file,
                "supplier": "Organization: Debian" if component.kind == "deb" else "NOASSERTION",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "primaryPackagePurpose": "OPERATING-SYSTEM" if component.kind == "deb" else "LIBRARY",
                "checksums": [{"algorithm": "SHA256", "checksumValue": component.sha256}],
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": component.purl,
                    }
                ],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": declared,
                "copyrightText": "NOASSERTION",
            }
        )
        relationships.append(
            {"spdxElementId": root, "relatedSpdxElement": ref, "relationshipType": "CONTAINS"}
        )
    for ref, name, version, purpose, checksum in (
        (
            "SPDXRef-omi-build-runtime",
            "omi-build-runtime",
            __version__,
            "APPLICATION",
            contents.runtime_layer,
        ),
        ("SPDXRef-omi-build", "omi-build", __version__, "APPLICATION", ""),
    ):
        package: dict[str, Any] = {
            "SPDXID": ref,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "primaryPackagePurpose": purpose,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }
        if checksum:
            package["checksums"] = [
                {"algorithm": "SHA256", "checksumValue": checksum.removeprefix("sha256:")}
            ]
            package["comment"] = "the server the image runs; the checksum is its layer's digest"
        packages.append(package)
    relationships += [
        {
            "spdxElementId": root,
            "relatedSpdxElement": "SPDXRef-omi-build-runtime",
            "relationshipType": "CONTAINS",
        },
        {
            "spdxElementId": "SPDXRef-omi-build",
            "relatedSpdxElement": root,
            "relationshipType": "BUILD_TOOL_OF",
        },
    ]
    for path, sha256 in sorted(contents.model_files.items()):
        ref = _spdx_ref("Model", path)
        packages.append(
            {
                "SPDXID": ref,
                "name": path,
                "versionInfo": contents.version,
                "packageFileName": path,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "primaryPackagePurpose": "FILE",
                "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "comment": "a model file",
            }
        )
        relationships.append(
            {"spdxElementId": root, "relatedSpdxElement": ref, "relationshipType": "CONTAINS"}
        )
    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{contents.name}-{contents.version}-{contents.architecture}",
        "documentNamespace": f"urn:omi-build:spdx:{contents.name}:{contents.hex}",
        "creationInfo": {"created": _created(contents.epoch), "creators": [f"Tool: omi-build-{__version__}"]},
        "documentDescribes": [root],
        "packages": packages,
        "relationships": relationships,
    }
    if extracted:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": name, "extractedText": f"The package states its licence as '{name}'."}
            for ref, name in sorted(extracted.items())
        ]
    return canonical(document)


def _cyclonedx_licenses(names: tuple[str, ...]) -> list[dict[str, Any]]:
    found = [spdx_id(name) for name in names]
    if names and all(found) and len(names) == 1:
        value = found[0] or ""
        return [{"expression": value}] if " " in value else [{"license": {"id": value}}]
    return [
        {"license": {"id": spdx}} if spdx and " " not in spdx else {"license": {"name": name}}
        for name, spdx in zip(names, found, strict=True)
    ]


def cyclonedx(contents: Contents) -> bytes:
    """The image's CycloneDX 1.6 JSON document."""
    root = contents.image_purl
    components: list[dict[str, Any]] = []
    for component in contents.sorted_components():
        entry: dict[str, Any] = {
            "type": "library",
            "bom-ref": component.purl,
            "name": component.name,
            "version": component.version,
            "purl": component.purl,
            "hashes": [{"alg": "SHA-256", "content": component.sha256}],
            "properties": [{"name": "omi-build:file", "value": component.file}],
        }
        if component.kind == "deb":
            entry["supplier"] = {"name": "Debian"}
        if component.licenses:
            entry["licenses"] = _cyclonedx_licenses(component.licenses)
        components.append(entry)
    components.append(
        {
            "type": "application",
            "bom-ref": "omi-build-runtime",
            "name": "omi-build-runtime",
            "version": __version__,
            "hashes": [{"alg": "SHA-256", "content": contents.runtime_layer.removeprefix("sha256:")}],
            "description": "the server the image runs; the hash is its layer's digest",
        }
    )
    components.extend(
        {
            "type": "file",
            "bom-ref": f"model:{path}",
            "name": path,
            "hashes": [{"alg": "SHA-256", "content": sha256}],
            "description": "a model file",
        }
        for path, sha256 in sorted(contents.model_files.items())
    )
    document = {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'omi-build:' + contents.digest)}",
        "version": 1,
        "metadata": {
            "timestamp": _created(contents.epoch),
            "tools": {"components": [{"type": "application", "name": "omi-build", "version": __version__}]},
            "component": {
                "type": "container",
                "bom-ref": root,
                "name": contents.name,
                "version": contents.version,
                "purl": root,
                "hashes": [{"alg": "SHA-256", "content": contents.hex}],
            },
        },
        "components": components,
        "dependencies": [{"ref": root, "dependsOn": [c["bom-ref"] for c in components]}],
    }
    return canonical(document)
