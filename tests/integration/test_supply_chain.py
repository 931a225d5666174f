"""The iris image end to end: its SBOMs validate and list every package, it is signed with a
throwaway cosign key and verified, its model signature verifies with OpenSSF model signing,
and a model file changed after the build is refused by the server."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from omi_build import api, lock, provenance
from omi_build.build import BuiltImage
from omi_build.errors import ModelSignatureError, VerificationError
from omi_build.manifest import load
from omi_build.sign import keys
from omi_build.sign.dsse import key_bundle
from tests.conftest import EXAMPLES

from .conftest import build_in

pytestmark = pytest.mark.integration


def test_the_sboms_validate_and_list_every_locked_package(iris_build: tuple[Path, list[BuiltImage]]) -> None:
    directory, images = iris_build
    pinned = lock.read(load(directory / "iris-sklearn"))
    for image in images:
        arch = image.platform.split("/")[1]
        spdx = directory / f"out.{arch}.spdx.json"
        assert validate_full_spdx_document(parse_file(str(spdx))) == []
        cyclonedx = (directory / f"out.{arch}.cdx.json").read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(cyclonedx) is None
        entry = pinned.platform("cpu", image.platform)
        packages = {p["name"]: p for p in json.loads(spdx.read_text())["packages"]}
        for deb in entry.debian:
            assert packages[deb.name]["checksums"][0]["checksumValue"] == deb.sha256
        for wheel in entry.wheels:
            assert packages[wheel.name]["checksums"][0]["checksumValue"] == wheel.sha256
        assert api.sbom(str(image.layout), platform=image.platform) == spdx.read_bytes()


def test_sign_and_verify_with_a_key_end_to_end(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path
) -> None:
    directory, images = iris_build
    layout = tmp_path / "layout"
    shutil.copytree(images[0].layout, layout)
    private, public = api.keygen(tmp_path / "cosign", b"throwaway")
    _, signed = api.sign(str(layout), key=private, password=b"throwaway")
    kinds = [s.kind for s in signed]
    # A bundle and a classic signature for each image and the index; three attestations per image
    # (SPDX, CycloneDX, SLSA) and the model statement on the index.
    assert kinds.count("signature") == kinds.count("classic") == 3
    assert len(signed) == 3 * 2 + 2 * 3 + 1
    _, checks = api.verify(str(layout), key=public, require=["sbom", "provenance", "model"])
    assert {c.platform for c in checks} == {"index", "linux/amd64", "linux/arm64"}
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == images[0].index  # signing moved no digest
    # OpenSSF model signing checks the weights outside the image with the same key.
    model_sig = tmp_path / f"{layout.name}.model.sig"
    command = [sys.executable, "-m", "model_signing", "verify", "key", "--signature", str(model_sig),
               "--public_key", str(public), str(directory / "iris-sklearn")]  # fmt: skip
    assert subprocess.run(command, capture_output=True, text=True, check=False).returncode == 0
    wrong, _ = api.keygen(tmp_path / "other", b"x")
    with pytest.raises(VerificationError, match="does not verify"):
        api.verify(str(layout), key=wrong.with_suffix(".pub"))


def test_a_trainers_model_signature_is_checked_before_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iris_build: tuple[Path, list[BuiltImage]]
) -> None:
    del iris_build  # only for its warm download cache
    example = tmp_path / "iris-sklearn"
    shutil.copytree(
        EXAMPLES / "iris-sklearn", example, ignore=shutil.ignore_patterns("omi-out", "__pycache__")
    )
    trainer = keys.generate()
    (example / "trainer.pub").write_bytes(trainer.public.pem())
    files = {n: hashlib.sha256((example / n).read_bytes()).hexdigest() for n in ("model.npz", "model.py")}
    statement = provenance.model_signing(example, files)
    hint = trainer.public.model_signing_hint()
    (example / "model.sig").write_bytes(key_bundle(statement, trainer, hint=hint))
    text = (example / "omi.yaml").read_text()
    text = text.replace("model:\n", "model:\n  signature: {file: model.sig, public_key: trainer.pub}\n", 1)
    (example / "omi.yaml").write_text(text)
    build_in(tmp_path, monkeypatch)  # verifies, then builds
    (example / "model.npz").write_bytes((example / "model.npz").read_bytes() + b"\0")
    with pytest.raises(ModelSignatureError, match=r"model\.npz"):
        build_in(tmp_path, monkeypatch)
