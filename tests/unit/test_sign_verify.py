"""sign then verify the tiny layout: what verifies, what each kind of tampering breaks (named),
that signing moves no digest, that verification opens no socket, and that independent
implementations accept what omi-build writes."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any, Self

import pytest
from sigstore.models import Bundle

from omi_build import cli, provenance
from omi_build.errors import VerificationError
from omi_build.image import write_layout
from omi_build.image.layout import Layout
from omi_build.sign import KeySigner, dsse, keyless, keys, sign
from omi_build.store import Store
from omi_build.verify import Trust, verify

from .layouts import TAG, described_layout

ALL = frozenset({"sbom", "provenance", "model"})


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate()


def _signed(tmp_path: Path, key: keys.PrivateKey) -> tuple[Layout, str, list[Any]]:
    path, digest, images = described_layout(tmp_path)
    layout = Layout.open(path)
    sign(layout, KeySigner(key), reference="tiny:1.0.0")
    return Layout.open(path), digest, images


def _blob_of(layout: Layout, artifact_type: str, subject: str, predicate: str | None = None) -> Path:
    for descriptor in layout.referrers(subject, artifact_type):
        if predicate is None or descriptor.annotations.get(provenance.PREDICATE_ANNOTATION) == predicate:
            return layout.blob_path(layout.json_blob(descriptor.digest)["layers"][0]["digest"])
    msg = f"no {artifact_type} attached to {subject}"
    raise AssertionError(msg)


def _flip(path: Path, at: int = 40) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_signing_moves_no_digest_and_everything_verifies(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout, digest, images = _signed(tmp_path, key)
    assert layout.target_index(TAG).digest == digest
    assert [i.digest for i in layout.images()] == [i.digest for i in images]
    checks = verify(layout, Trust(key=key.public, require=ALL))
    seen = {(c.platform, c.what) for c in checks}
    for platform in ("index", "linux/amd64", "linux/arm64"):
        assert (platform, "signature") in seen
        assert (platform, "classic signature") in seen
    for platform in ("linux/amd64", "linux/arm64"):
        for predicate in (
            "https://spdx.dev/Document",
            "https://cyclonedx.org/bom",
            provenance.SLSA_PROVENANCE,
        ):
            assert (platform, predicate) in seen
    assert ("index", provenance.MODEL_SIGNING) in seen


def test_verification_opens_no_socket(
    tmp_path: Path, key: keys.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, _, _ = _signed(tmp_path, key)

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        msg = "verify reached for the network"
        raise AssertionError(msg)

    for name in ("getaddrinfo", "create_connection"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    verify(layout, Trust(key=key.public, require=ALL))


def test_a_wrong_key_fails(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout, _, _ = _signed(tmp_path, key)
    with pytest.raises(VerificationError, match="does not verify with the given key"):
        verify(layout, Trust(key=keys.generate().public))


def test_an_unsigned_image_fails(tmp_path: Path) -> None:
    path, _, _ = described_layout(tmp_path)
    with pytest.raises(VerificationError, match="is not signed") as failure:
        verify(Layout.open(path), Trust(key=keys.generate().public))
    assert [getattr(c, "what", "") for c in failure.value.verified] == ["digests"]  # what held before


def test_signatures_optional_still_checks_every_digest_and_says_what_it_skipped(tmp_path: Path) -> None:
    path, _, _ = described_layout(tmp_path)
    layout = Layout.open(path)
    checks = verify(layout, Trust(signatures_optional=True))
    assert [(c.what, c.detail) for c in checks][1] == (
        "signature",
        "not checked: security.signing.required is false",
    )
    _flip(layout.blob_path(layout.image("arm64").layers[0].digest), at=60)
    with pytest.raises(VerificationError, match="damaged"):
        verify(Layout.open(path), Trust(signatures_optional=True))
    with pytest.raises(VerificationError, match="needs a key or an identity"):
        verify(Layout.open(path), Trust(signatures_optional=True, require=ALL))
    with pytest.raises(VerificationError, match="no key and no identity"):
        verify(Layout.open(path), Trust())


@pytest.mark.parametrize("what", ["layer", "manifest", "config", "signature", "sbom", "provenance", "index"])
def test_flipping_one_byte_fails_and_names_what(tmp_path: Path, key: keys.PrivateKey, what: str) -> None:
    layout, digest, _ = _signed(tmp_path, key)
    image = layout.image("arm64")
    target = {
        "layer": lambda: layout.blob_path(image.layers[0].digest),
        "manifest": lambda: layout.blob_path(image.digest),
        "config": lambda: layout.blob_path(image.manifest["config"]["digest"]),
        "signature": lambda: _blob_of(layout, dsse.BUNDLE_TYPE, image.digest, dsse.COSIGN_SIGN),
        "sbom": lambda: _blob_of(layout, "application/spdx+json", image.digest),
        "provenance": lambda: _blob_of(layout, dsse.BUNDLE_TYPE, image.digest, provenance.SLSA_PROVENANCE),
        "index": lambda: layout.blob_path(digest),
    }[what]()
    _flip(target, at=60 if what == "layer" else 20)
    with pytest.raises(VerificationError, match=r"damaged|does not verify|no longer") as failure:
        verify(Layout.open(layout.directory), Trust(key=key.public, require=ALL))
    assert target.name[:12] in str(failure.value) or what in {"signature", "provenance"}


def test_an_sbom_replaced_after_signing_fails(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout, _, _ = _signed(tmp_path, key)
    image = layout.image("amd64")
    for descriptor in layout.referrers(image.digest, "application/spdx+json"):
        document = json.loads(layout.blob(layout.json_blob(descriptor.digest)["layers"][0]["digest"]))
    document["packages"][1]["versionInfo"] = "9.9.9"
    manifests = [m for m in layout.descriptors if m.artifact_type != "application/spdx+json"]
    top = json.loads((layout.directory / "index.json").read_text())
    top["manifests"] = [m.to_json() for m in manifests]
    (layout.directory / "index.json").write_text(json.dumps(top))
    reopened = Layout.open(layout.directory)
    from omi_build.image.layout import MANIFEST_TYPE, Descriptor  # noqa: PLC0415

    subject = Descriptor(
        media_type=MANIFEST_TYPE, digest=image.digest, size=image.descriptor.size, annotations={}
    )
    data = json.dumps(document).encode()
    reopened.attach(subject, "application/spdx+json", [("application/spdx+json", data)])
    with pytest.raises(VerificationError, match="no signed SBOM is the SBOM attached"):
        verify(Layout.open(layout.directory), Trust(key=key.public))


def test_a_signature_moved_onto_another_image_fails(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout, _, _ = _signed(tmp_path, key)
    amd64, arm64 = layout.image("amd64"), layout.image("arm64")
    good = _blob_of(layout, dsse.BUNDLE_TYPE, amd64.digest, dsse.COSIGN_SIGN)
    bad = _blob_of(layout, dsse.BUNDLE_TYPE, arm64.digest, dsse.COSIGN_SIGN)
    # Keep the arm64 bundle's file name (its digest) but give it the amd64 signature: the blob
    # check catches the swap; so does the subject check when the digest is recomputed.
    statement = dsse.open_key_bundle(good.read_bytes(), key.public, what="x")
    assert statement.names(amd64.digest)
    assert not statement.names(arm64.digest)
    bad.write_bytes(good.read_bytes())
    with pytest.raises(VerificationError, match="damaged"):
        verify(Layout.open(layout.directory), Trust(key=key.public))


def test_required_attestations_must_be_there(tmp_path: Path, key: keys.PrivateKey) -> None:
    path, _, _ = described_layout(tmp_path)
    layout = Layout.open(path)
    signer = KeySigner(key)
    # Sign only the images' and index's signatures: drop the unsigned statements first.
    top = json.loads((path / "index.json").read_text())
    top["manifests"] = [m for m in top["manifests"] if "artifactType" not in m]
    (path / "index.json").write_text(json.dumps(top))
    sign(Layout.open(path), signer, reference="tiny:1.0.0")
    verify(Layout.open(path), Trust(key=key.public))
    for requirement in ("sbom", "provenance", "model"):
        with pytest.raises(VerificationError, match=f"--require {requirement}"):
            verify(Layout.open(path), Trust(key=key.public, require=frozenset({requirement})))
    assert layout.directory == path


def test_signing_twice_keeps_both_classic_signatures_and_a_rebuild_keeps_them(
    tmp_path: Path, key: keys.PrivateKey
) -> None:
    layout, digest, images = _signed(tmp_path, key)
    other = keys.generate()
    sign(layout, KeySigner(other), reference="tiny:1.0.0")
    from omi_build.image.layout import tag_of_signature  # noqa: PLC0415

    tagged = layout.tagged(tag_of_signature(digest))
    assert tagged is not None
    assert len(layout.json_blob(tagged.digest)["layers"]) == 2
    # The same images written again (a no-op rebuild): the signatures stay and still verify.
    assert (
        write_layout(layout.directory, Store(tmp_path / "cache"), images, labels={"test": "tiny"}, tag=TAG)
        == digest
    )
    verify(Layout.open(layout.directory), Trust(key=key.public))
    verify(Layout.open(layout.directory), Trust(key=other.public))


def test_model_signing_accepts_the_model_signature(tmp_path: Path, key: keys.PrivateKey) -> None:
    from model_signing import verifying  # noqa: PLC0415 - the independent implementation

    layout, _, _ = _signed(tmp_path, key)
    signature = layout.directory.with_name(f"{layout.directory.name}.{provenance.MODEL_SIGNATURE_FILE}")
    public = tmp_path / "cosign.pub"
    public.write_bytes(key.public.pem())
    verifying.Config().use_elliptic_key_verifier(public_key=public).verify(tmp_path / "model", signature)
    (tmp_path / "model" / "weights.bin").write_bytes(b"changed")
    with pytest.raises(ValueError, match=r"weights\.bin"):
        verifying.Config().use_elliptic_key_verifier(public_key=public).verify(tmp_path / "model", signature)


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_keygen_sign_verify_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = described_layout(tmp_path)
    monkeypatch.setenv("COSIGN_PASSWORD", "throwaway")
    prefix = tmp_path / "release"
    assert _cli("keygen", "--output-key-prefix", str(prefix))[0] == 0
    code, out, _ = _cli("sign", str(path), "--key", f"{prefix}.key", "--format", "json")
    assert code == 0
    assert {row["kind"] for row in json.loads(out)["signed"]} >= {
        "signature",
        "classic",
        provenance.SLSA_PROVENANCE,
    }
    code, out, _ = _cli(
        "verify", str(path), "--key", f"{prefix}.pub", "--require", "sbom,provenance", "--format", "json"
    )
    assert code == 0
    assert json.loads(out)["ok"] is True
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    code, _, err = _cli("sign", str(path), "--key", f"{prefix}.key")
    assert code == 1
    assert "wrong password" in err
    layout = Layout.open(path)
    _flip(_blob_of(layout, dsse.BUNDLE_TYPE, layout.image("amd64").digest, provenance.SLSA_PROVENANCE))
    code, out, err = _cli("verify", str(path), "--key", f"{prefix}.pub")
    assert code == 4
    assert "damaged" in err
    assert "OK  index" in out  # what verified before the failure
    code, out, _ = _cli("verify", str(path), "--key", f"{prefix}.pub", "--format", "json")
    assert json.loads(out)["reference"] == "verification-failed"


class _Recorded:
    """sigstore's signing context, replaying a real keyless bundle (cosign's, from the vectors)
    for every statement: what a Fulcio certificate and a Rekor entry would give, offline."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.statements: list[Any] = []

    def signer(self, token: object) -> Any:
        del token
        outer = self

        class _Signer:
            def __enter__(self) -> Self:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def sign_dsse(self, statement: Any) -> Any:
                outer.statements.append(statement)
                return outer.bundle

        return _Signer()


def test_a_keyless_bundle_is_attached_as_sigstore_wrote_it_and_verified_for_its_subject(
    tmp_path: Path,
) -> None:
    vectors = Path(__file__).parents[1] / "vectors" / "cosign-new-bundle"
    recorded = Bundle.from_json((vectors / "oci-attestation.sigstore.json").read_bytes())
    signer = object.__new__(keyless.Signer)
    recording = _Recorded(recorded)
    signer._context = recording  # type: ignore[assignment]  # replaces the network
    signer._token = None  # type: ignore[assignment]
    path, digest, _ = described_layout(tmp_path)
    sign(Layout.open(path), signer, reference="tiny:1.0.0")
    layout = Layout.open(path)
    attached = _blob_of(layout, dsse.BUNDLE_TYPE, digest, dsse.COSIGN_SIGN).read_bytes()
    assert Bundle.from_json(attached).to_json() == recorded.to_json()  # sigstore reads it back
    # The statements handed to sigstore are ours: the index's and each image's digest.
    handed = recording.statements
    subjects = {"sha256:" + json.loads(s._contents)["subject"][0]["digest"]["sha256"] for s in handed}
    assert subjects >= {digest, *(i.digest for i in layout.images())}
    # The recorded bundle verifies for its signer against its trusted root, but it signs another
    # image, so verify refuses it by subject; with another identity it fails before that.
    who = keyless.Identity(identity="cody@soyland.com", issuer="https://github.com/login/oauth")
    trust = Trust(identity=who, trusted_root=vectors / "trusted_root_pgi.json")
    with pytest.raises(VerificationError, match=r"names .*, not sha256:"):
        verify(layout, trust)
    stranger = keyless.Identity(identity="someone@example.com", issuer="https://github.com/login/oauth")
    with pytest.raises(VerificationError) as failure:
        verify(layout, Trust(identity=stranger, trusted_root=vectors / "trusted_root_pgi.json"))
    assert "names" not in str(failure.value)
