"""Layer inventories: the packages a layer holds, kept with its cache record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from omi_build.layers import Component, Entry, Layer
from omi_build.layers._inventory import (
    debian_copyrights,
    debian_licenses,
    of_deb,
    of_wheel,
    wheel_licenses,
)
from omi_build.layers._unpack import Unpacked
from omi_build.lock import DebPackage, Wheel
from tests.unit.builders import layer_builder

DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zlib

Files: *
Copyright: 1995-2022 Jean-loup Gailly and Mark Adler
License: Zlib
 This software is provided 'as-is', without any express or implied warranty.

Files: debian/*
License: Zlib

Files: contrib/*
License: GPL-2+ or Artistic
"""


def test_debian_licenses_are_the_dep5_license_fields_in_order() -> None:
    assert debian_licenses(DEP5) == ("Zlib", "GPL-2+ or Artistic")
    assert debian_licenses("This is zlib, by Jean-loup Gailly.\nLicense: see below\n") == ()
    assert debian_licenses("") == ()


def test_wheel_licenses_prefer_the_expression_then_license_then_classifiers() -> None:
    assert wheel_licenses("Metadata-Version: 2.4\nName: a\nLicense-Expression: MIT OR Apache-2.0\n") == (
        "MIT OR Apache-2.0",
    )
    classic = (
        "Metadata-Version: 2.1\nName: b\nLicense: BSD-3-Clause\n"
        "Classifier: License :: OSI Approved :: BSD License\nClassifier: License :: OSI Approved\n"
        "Classifier: Programming Language :: Python\n"
    )
    assert wheel_licenses(classic) == ("BSD-3-Clause", "BSD License")
    whole_text = "Metadata-Version: 2.1\nName: c\nLicense: " + "x" * 300 + "\n"
    assert wheel_licenses(whole_text) == ()  # the licence's text, not a name


def test_components_of_a_deb_and_a_wheel() -> None:
    deb = DebPackage(
        name="zlib1g", version="1:1.2.13", architecture="amd64", filename="pool/z.deb", sha256="a" * 64,
        size=1, suite="bookworm",
    )  # fmt: skip
    zlib = Unpacked(entries=(Entry(path="usr/share/doc/zlib1g/copyright", data=DEP5.encode()),))
    linked = Unpacked(entries=(Entry(path="usr/share/doc/zlib1g-dev", kind="symlink", target="zlib1g"),))
    copyrights = debian_copyrights([zlib, linked])
    licenses = ("Zlib", "GPL-2+ or Artistic")
    assert of_deb(deb, copyrights) == Component(
        kind="deb", name="zlib1g", version="1:1.2.13", sha256="a" * 64, licenses=licenses
    )
    assert of_deb(dataclasses.replace(deb, name="zlib1g-dev"), copyrights).licenses == licenses  # linked
    assert of_deb(dataclasses.replace(deb, name="other"), copyrights).licenses == ()
    wheel = Wheel(
        name="six", version="1.17.0", filename="six-1.17.0-py3-none-any.whl", sha256="b" * 64, size=1
    )
    metadata = Entry(
        path="usr/lib/python3/dist-packages/six-1.17.0.dist-info/METADATA",
        data=b"Metadata-Version: 2.1\nName: six\nLicense: MIT\n",
    )
    assert of_wheel(wheel, Unpacked(entries=(metadata,))).licenses == ("MIT",)
    assert of_wheel(wheel, Unpacked(entries=())).licenses == ()


def test_a_cache_hit_describes_its_layer_without_building_or_describing_again(tmp_path: Path) -> None:
    described: list[int] = []
    component = Component(kind="wheel", name="six", version="1.17.0", sha256="b" * 64, licenses=("MIT",))

    def describe() -> list[Component]:
        described.append(1)
        return [component]

    def layer() -> Layer:
        with layer_builder(tmp_path / "cache") as builder:
            return builder.layer(
                "six", {"wheels": ["b" * 64]}, lambda: [Entry(path="x", data=b"x")], describe
            )

    first = layer()
    assert first.inventory == (component,)
    again = layer()
    assert again == first
    assert described == [1]
    # a record of the older format (the blob alone) is not trusted: the layer is built again
    (record,) = (tmp_path / "cache" / "layers").iterdir()
    record.write_text(json.dumps(json.loads(record.read_text())["blob"]))
    assert layer() == first
    assert described == [1, 1]
