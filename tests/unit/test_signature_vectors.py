"""Real signatures from cosign, containers/image, sigstore-python, the sigstore conformance
suite and OpenSSF model signing verify (or fail) as tests/vectors/README.md says, offline."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from omi_build.digests import digest_of
from omi_build.errors import VerificationError
from omi_build.sign import bundles, dsse, keyless, models, simple
from omi_build.sign.keys import PublicKey

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
CLASSIC = VECTORS / "cosign-classic"
BUNDLES = VECTORS / "sigstore-bundles"
CONFORMANCE = VECTORS / "sigstore-conformance" / "bundle-verify"
MODELS = VECTORS / "model-signing"
PRODUCTION = BUNDLES / "trusted-roots" / "production.trusted_root.json"
STAGING = BUNDLES / "trusted-roots" / "staging.trusted_root.json"


def _key(path: Path) -> PublicKey:
    return PublicKey.from_pem(path.read_bytes())


@pytest.mark.parametrize(
    ("case", "key"),
    [
        ("dir-img-cosign-valid", "cosign.pub"),
        ("dir-img-cosign-valid-2", "cosign.pub"),
        ("dir-img-cosign-key-rekor-valid", "cosign2.pub"),
    ],
)
def test_valid_classic_signatures_verify_with_their_key(case: str, key: str) -> None:
    signatures = sorted((CLASSIC / case).glob("signature-*"))
    assert signatures
    digest = digest_of((CLASSIC / case / "manifest.json").read_bytes())
    for path in signatures:
        payload, signature, _ = simple.containers_image_signature(path.read_bytes())
        simple.verify(payload, signature, _key(CLASSIC / key), digest, what=path.name)


@pytest.mark.parametrize("case", ["dir-img-cosign-modified-manifest", "dir-img-cosign-manifest-digest-error"])
def test_a_signature_for_another_manifest_is_rejected(case: str) -> None:
    payload, signature, _ = simple.containers_image_signature((CLASSIC / case / "signature-1").read_bytes())
    digest = digest_of((CLASSIC / case / "manifest.json").read_bytes())
    with pytest.raises(VerificationError, match="not for this image's manifest"):
        simple.verify(payload, signature, _key(CLASSIC / "cosign.pub"), digest, what=case)


def test_a_signature_by_an_unknown_key_verifies_with_neither_key() -> None:
    payload, signature, _ = simple.containers_image_signature(
        (CLASSIC / "unknown-cosign-key.signature").read_bytes()
    )
    for key in ("cosign.pub", "cosign2.pub"):
        assert not _key(CLASSIC / key).verifies(base64.b64decode(signature), payload)


def test_the_keyless_classic_signature_verifies_with_its_certificate_key() -> None:
    path = CLASSIC / "dir-img-cosign-fulcio-rekor-valid" / "signature-1"
    payload, signature, annotations = simple.containers_image_signature(path.read_bytes())
    certificate = x509.load_pem_x509_certificate(annotations["dev.sigstore.cosign/certificate"].encode())
    key = PublicKey(certificate.public_key())  # type: ignore[arg-type]
    assert key.verifies(base64.b64decode(signature), payload)


@pytest.mark.parametrize(
    ("bundle", "root", "identity", "issuer"),
    [
        (
            "production/bundle_v3_github.whl.sigstore",
            PRODUCTION,
            "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
            "https://token.actions.githubusercontent.com",
        ),
        ("staging/bundle.txt.sigstore", STAGING, "a@tny.town", "https://github.com/login/oauth"),
        (
            "staging/bundle_v3.txt.sigstore",
            STAGING,
            "william@yossarian.net",
            "https://github.com/login/oauth",
        ),
        (
            "staging/staging-rekor-v2.txt.sigstore.json",
            STAGING,
            "jku@goto.fi",
            "https://github.com/login/oauth",
        ),
    ],
)
def test_sigstore_bundles_verify_offline_and_fail_for_another_identity(
    bundle: str, root: Path, identity: str, issuer: str
) -> None:
    path = BUNDLES / bundle
    artifact = path.with_name(path.name.removesuffix(".sigstore.json").removesuffix(".sigstore")).read_bytes()
    right = keyless.Identity(identity=identity, issuer=issuer)
    assert (
        bundles.verify_bundle(path.read_bytes(), artifact, identity=right, trusted_root=root)
        == "message signature"
    )
    wrong = keyless.Identity(identity="someone@else.example", issuer=issuer)
    with pytest.raises(VerificationError):
        bundles.verify_bundle(path.read_bytes(), artifact, identity=wrong, trusted_root=root)


def test_a_production_bundle_fails_against_the_staging_root() -> None:
    path = BUNDLES / "production" / "bundle_v3_github.whl.sigstore"
    identity = keyless.Identity(
        identity="https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2",
        issuer="https://token.actions.githubusercontent.com",
    )
    with pytest.raises(VerificationError):
        bundles.verify_bundle(
            path.read_bytes(), path.with_suffix("").read_bytes(), identity=identity, trusted_root=STAGING
        )


def test_the_inconsistent_log_entry_of_cve_2022_36056_fails() -> None:
    path = BUNDLES / "staging" / "bundle_cve_2022_36056.txt.sigstore"
    identity = keyless.Identity(identity_regexp=".*", issuer_regexp=".*")
    with pytest.raises(VerificationError, match="inconsistent"):
        bundles.verify_bundle(
            path.read_bytes(), path.with_suffix("").read_bytes(), identity=identity, trusted_root=STAGING
        )


def test_cosigns_new_format_attestation_verifies_as_a_v01_statement() -> None:
    data = (VECTORS / "cosign-new-bundle" / "oci-attestation.sigstore.json").read_bytes()
    root = VECTORS / "cosign-new-bundle" / "trusted_root_pgi.json"
    identity = keyless.Identity(identity="cody@soyland.com", issuer="https://github.com/login/oauth")
    statement = keyless.open_bundle(data, identity, trusted_root=root, what="the attestation")
    assert statement.predicate_type == "https://cosign.sigstore.dev/attestation/v1"
    assert statement.names("sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4")
    regexp = keyless.Identity(
        identity_regexp=r"cody@soyland\.(com|dev)", issuer_regexp=r"https://github\.com/.*"
    )
    keyless.open_bundle(data, regexp, trusted_root=root, what="the attestation")
    with pytest.raises(VerificationError, match="does not match"):
        keyless.open_bundle(
            data,
            keyless.Identity(identity_regexp=r"cody@soyland", issuer_regexp=".*"),  # a full match only
            trusted_root=root,
            what="the attestation",
        )
    with pytest.raises(VerificationError):
        keyless.open_bundle(
            data,
            keyless.Identity(identity="cody@soyland.com", issuer="https://accounts.google.com"),
            trusted_root=root,
            what="the attestation",
        )


_BEACON = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
# Also failed by sigstore-python 4.5.1 (an upstream xfail and a case newer than it).
_KNOWN_FAILURES = {"intoto-with-custom-trust-root", "trust-root-tsa-validity-end-inclusive"}


def _conformance_case(case: Path) -> bool:
    """Whether the case's bundle verifies by the corpus's rules (README.md there)."""
    artifact = case / "artifact" if (case / "artifact").exists() else CONFORMANCE / "a.txt"
    identity = (case / "identity").read_text().strip() if (case / "identity").exists() else _BEACON
    issuer = (
        (case / "issuer").read_text().strip()
        if (case / "issuer").exists()
        else "https://token.actions.githubusercontent.com"
    )
    root = case / "trusted_root.json" if (case / "trusted_root.json").exists() else PRODUCTION
    try:
        key = _key(case / "key.pub") if (case / "key.pub").exists() else None
        bundles.verify_bundle(
            (case / "bundle.sigstore.json").read_bytes(),
            artifact.read_bytes(),
            key=key,
            identity=None if key else keyless.Identity(identity=identity, issuer=issuer),
            trusted_root=root,
        )
    except VerificationError:
        return False
    except Exception:  # noqa: BLE001 - a malformed case (bad PEM) is a failed verification too
        return False
    return True


def test_the_conformance_corpus_passes_where_sigstore_python_does_and_the_key_cases_too() -> None:
    cases = sorted(p for p in CONFORMANCE.iterdir() if p.is_dir())
    wrong = {c.name for c in cases if _conformance_case(c) == c.name.endswith("_fail")}
    assert wrong == _KNOWN_FAILURES  # 68 of 70: sigstore-python does 65, without the two key cases
    assert {"managed-key-happy-path", "managed-key-and-trusted-root"} <= {c.name for c in cases} - wrong


def test_a_key_bundle_fails_with_another_key_and_when_the_artifact_changes() -> None:
    case = CONFORMANCE / "managed-key-happy-path"
    data, artifact = (case / "bundle.sigstore.json").read_bytes(), (CONFORMANCE / "a.txt").read_bytes()
    with pytest.raises(VerificationError, match="does not verify"):
        bundles.verify_bundle(data, artifact, key=_key(CLASSIC / "cosign.pub"), trusted_root=PRODUCTION)
    with pytest.raises(VerificationError, match="digest"):
        bundles.verify_bundle(data, artifact + b"!", key=_key(case / "key.pub"), trusted_root=PRODUCTION)


_IBM = keyless.Identity(identity="stefanb@us.ibm.com", issuer="https://sigstore.verify.ibm.com/oauth2")


@pytest.mark.parametrize("case", ["v1.1.0-sigstore", "v1.0.0-sigstore", "v1.1.0-elliptic-key"])
def test_model_signatures_verify_and_fail_when_a_signed_file_changes(case: str, tmp_path: Path) -> None:
    key = _key(MODELS / "keys" / "certificate" / "signing-key-pub.pem") if "key" in case else None
    identity = None if key else _IBM
    model = tmp_path / case
    shutil.copytree(MODELS / case, model)
    signed = models.signed_files(
        (model / "model.sig").read_bytes(), key=key, identity=identity, trusted_root=PRODUCTION
    )
    assert sorted(signed) == ["signme-1", "signme-2"]
    models.check_files(model, signed)
    (model / "signme-1").write_bytes(b"tampered")
    with pytest.raises(VerificationError, match="hash mismatch for 'signme-1'"):
        models.check_files(model, signed)


def test_a_model_signature_fails_for_another_signer() -> None:
    data = (MODELS / "v1.1.0-sigstore" / "model.sig").read_bytes()
    with pytest.raises(VerificationError, match="SANs"):
        models.signed_files(
            data,
            identity=keyless.Identity(identity="mallory@example.com", issuer=_IBM.issuer),
            trusted_root=PRODUCTION,
        )
    with pytest.raises(VerificationError, match="does not verify"):
        models.signed_files(
            (MODELS / "v1.1.0-elliptic-key" / "model.sig").read_bytes(), key=_key(CLASSIC / "cosign.pub")
        )


def test_a_model_signature_whose_file_list_was_edited_fails() -> None:
    raw = json.loads((MODELS / "v1.1.0-elliptic-key" / "model.sig").read_bytes())
    payload = json.loads(base64.b64decode(raw["dsseEnvelope"]["payload"]))
    payload["predicate"]["resources"][0]["digest"] = "00" * 32
    raw["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(VerificationError, match="does not verify"):
        models.signed_files(
            json.dumps(raw).encode(), key=_key(MODELS / "keys" / "certificate" / "signing-key-pub.pem")
        )


def test_dsse_pae_is_the_specified_encoding() -> None:
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_a_model_signature_by_a_private_certificate_chain_is_refused_clearly() -> None:
    data = (VECTORS / "model-signing" / "v1.1.0-certificate" / "model.sig").read_bytes()
    with pytest.raises(VerificationError, match="private certificate chain"):
        models.signed_files(data, identity=_IBM)
