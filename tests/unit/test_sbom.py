"""SBOMs: valid for spdx-tools' full validation and CycloneDX's strict validator, exact, and
byte-reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from omi_build import sbom
from omi_build.sbom._licenses import expression, spdx_id

CONTENTS = sbom.Contents(
    name="iris",
    version="1.0.0",
    platform="linux/arm64",
    digest="sha256:" + "ab" * 32,
    epoch=1700000000,
    components=(
        sbom.Component(
            kind="deb",
            name="libc6",
            version="2.36-9+deb12u14",
            sha256="cd" * 32,
            file="pool/main/g/glibc/libc6_2.36-9+deb12u14_arm64.deb",
            licenses=("GPL-2+", "LGPL-2.1+", "public-domain"),
            architecture="arm64",
        ),
        sbom.Component(
            kind="deb",
            name="tzdata",
            version="2025b-0+deb12u1",
            sha256="ce" * 32,
            file="pool/t.deb",
            architecture="all",
        ),
        sbom.Component(
            kind="wheel",
            name="scikit_learn",
            version="1.9.1",
            sha256="ef" * 32,
            file="scikit_learn-1.9.1-cp311-cp311-manylinux_2_17_aarch64.whl",
            licenses=("BSD-3-Clause",),
        ),
        sbom.Component(
            kind="wheel",
            name="nvidia-cuda-runtime",
            version="13.0.96",
            sha256="ee" * 32,
            file="n.whl",
            licenses=("LicenseRef-NVIDIA-Proprietary",),
        ),
        sbom.Component(
            kind="wheel",
            name="numpy",
            version="2.4.6",
            sha256="ea" * 32,
            file="np.whl",
            licenses=("BSD License",),
        ),
    ),
    model_files={"/opt/omi/model/model.npz": "12" * 32},
    runtime_layer="sha256:" + "34" * 32,
)


def test_the_spdx_document_passes_spdx_tools_full_validation(tmp_path: Path) -> None:
    path = tmp_path / "image.spdx.json"
    path.write_bytes(sbom.spdx(CONTENTS))
    assert validate_full_spdx_document(parse_file(str(path))) == []


def test_the_cyclonedx_document_passes_the_strict_validator() -> None:
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.cyclonedx(CONTENTS).decode()) is None


def test_every_package_has_its_purl_sha256_and_licence() -> None:
    document = json.loads(sbom.spdx(CONTENTS))
    by_name = {p["name"]: p for p in document["packages"]}
    libc = by_name["libc6"]
    assert libc["externalRefs"][0]["referenceLocator"] == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=arm64&distro=debian-12"
    )
    assert libc["checksums"] == [{"algorithm": "SHA256", "checksumValue": "cd" * 32}]
    assert libc["licenseDeclared"] == "GPL-2.0-or-later AND LGPL-2.1-or-later AND LicenseRef-public-domain"
    assert by_name["tzdata"]["licenseDeclared"] == "NOASSERTION"
    assert by_name["scikit_learn"]["externalRefs"][0]["referenceLocator"] == "pkg:pypi/scikit-learn@1.9.1"
    assert by_name["nvidia-cuda-runtime"]["licenseDeclared"] == "LicenseRef-NVIDIA-Proprietary"
    image = by_name["iris"]
    assert image["primaryPackagePurpose"] == "CONTAINER"
    assert image["checksums"][0]["checksumValue"] == "ab" * 32
    assert by_name["/opt/omi/model/model.npz"]["checksums"][0]["checksumValue"] == "12" * 32
    assert {"omi-build", "omi-build-runtime"} <= set(by_name)
    assert document["documentNamespace"].endswith("ab" * 32)
    assert document["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    cyclonedx = json.loads(sbom.cyclonedx(CONTENTS))
    assert cyclonedx["metadata"]["component"]["type"] == "container"
    assert len(cyclonedx["components"]) == len(CONTENTS.components) + 2  # + the runtime, the model file


def test_the_same_image_gives_the_same_bytes_and_another_image_another_serial() -> None:
    assert sbom.spdx(CONTENTS) == sbom.spdx(CONTENTS)
    assert sbom.cyclonedx(CONTENTS) == sbom.cyclonedx(CONTENTS)
    other = sbom.Contents(
        **{
            **{f: getattr(CONTENTS, f) for f in CONTENTS.__dataclass_fields__},
            "digest": "sha256:" + "ff" * 32,
        }
    )
    assert (
        json.loads(sbom.cyclonedx(other))["serialNumber"]
        != json.loads(sbom.cyclonedx(CONTENTS))["serialNumber"]
    )


@pytest.mark.parametrize(
    ("name", "spdx"),
    [
        ("GPL-2+", "GPL-2.0-or-later"),
        ("GPL-3", "GPL-3.0-only"),
        ("LGPL-2", "LGPL-2.0-only"),
        ("AGPL-3+", "AGPL-3.0-or-later"),
        ("Expat", "MIT"),
        ("BSD-3-clause", "BSD-3-Clause"),
        ("Apache-2.0 OR MIT", "Apache-2.0 OR MIT"),
        ("public-domain", None),
        ("GPL-3+ with autoconf exception", None),
        ("", None),
    ],
)
def test_debian_and_wheel_licence_names_map_to_spdx_only_when_exact(name: str, spdx: str | None) -> None:
    assert spdx_id(name) == spdx


def test_names_without_an_spdx_id_become_declared_license_refs() -> None:
    assert expression(("public domain",)) == (
        "LicenseRef-public-domain",
        {"LicenseRef-public-domain": "public domain"},
    )
    assert expression(()) == ("NOASSERTION", {})
