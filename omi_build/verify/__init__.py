"""The verify stage: before deployment, check a layout's images as a deployment must see them.

Offline: with a key or a trusted root nothing here opens a socket. In order, stopping at the
first failure (which the error names):
  1. every blob relied on is re-hashed: the index, each image's manifest, config and layers;
  2. each image and the index carry a signature by the trusted key or identity whose signed
     subject is that digest (cosign v3's bundle; with a key, also its classic signature when
     present);
  3. every attestation attached is signed by the same signer and names the same digest, and an
     SBOM attestation matches the SBOM attached beside it;
  4. what `--require` (or the manifest's security.signing) asks for is there.

An image whose manifest says `security.signing.required: false`, verified without a key or an
identity, gets step 1 only, and the checks say that its signatures were not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omi_build import provenance
from omi_build.errors import LayoutError, VerificationError
from omi_build.image.layout import Descriptor, Image, Layout
from omi_build.layers import MODEL_DIR
from omi_build.sign import (
    ATTESTATION_TYPES,
    CYCLONEDX_PREDICATE,
    SPDX_PREDICATE,
    classic_tag,
    dsse,
    keyless,
    simple,
)
from omi_build.sign.dsse import Statement
from omi_build.sign.keys import PublicKey
from omi_build.store import sha256_file

REQUIREMENTS = ("sbom", "provenance", "model")
_SIGNER_HINT = "pass --key, or --certificate-identity and --certificate-oidc-issuer"
_REQUIRED_PREDICATES = {
    "sbom": (SPDX_PREDICATE, CYCLONEDX_PREDICATE),
    "provenance": (provenance.SLSA_PROVENANCE,),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Trust:
    """Whom to trust: a public key, or a keyless identity checked against a trusted root."""

    key: PublicKey | None = None
    identity: keyless.Identity | None = None
    trusted_root: Path | None = None
    require: frozenset[str] = field(default_factory=frozenset)
    signatures_optional: bool = False  # security.signing.required: false, and no signer named

    def describe(self) -> str:
        if self.key is not None:
            return f"key {self.key.hint()}"
        return self.identity.describe() if self.identity else "nobody"

    def open(self, data: bytes, *, what: str) -> Statement:
        if self.key is not None:
            return dsse.open_key_bundle(data, self.key, what=what)
        if self.identity is None:
            msg = "no key and no identity to verify against"
            raise VerificationError(msg, hint=_SIGNER_HINT)
        return keyless.open_bundle(data, self.identity, trusted_root=self.trusted_root, what=what)


@dataclass(frozen=True, kw_only=True, slots=True)
class Check:
    """One thing verified: about which subject, what, and how."""

    subject: str
    platform: str
    what: str
    detail: str


class _Run:
    def __init__(self, layout: Layout, trust: Trust) -> None:
        self.layout, self.trust = layout, trust
        self.checks: list[Check] = []

    def fail(self, message: str, hint: str | None = None) -> VerificationError:
        return VerificationError(message, hint=hint, verified=tuple(self.checks))

    def guarded(self, action: Callable[[], None]) -> None:
        try:
            action()
        except VerificationError as exc:
            raise self.fail(str(exc), exc.hint) from exc
        except LayoutError as exc:
            raise self.fail(
                str(exc), "the layout was changed after it was built; build and sign it again"
            ) from exc

    def ok(self, subject: str, platform: str, what: str, detail: str) -> None:
        self.checks.append(Check(subject=subject, platform=platform, what=what, detail=detail))


def _platform(image: Image) -> str:
    return f"{image.platform.get('os', 'linux')}/{image.architecture}"


def _check_blobs(run: _Run, index: Descriptor, images: list[Image]) -> None:
    layout = run.layout
    layers = 0
    for image in images:
        layout.blob(str(image.manifest["config"]["digest"]))
        for layer in image.layers:
            path = layout.blob_path(layer.digest)
            try:
                intact = sha256_file(path) == layer.digest.removeprefix("sha256:")
            except OSError as exc:
                msg = f"the layer {layer.digest} of the {_platform(image)} image is missing"
                raise VerificationError(msg) from exc
            if not intact:
                msg = (
                    f"the layer {layer.digest} of the {_platform(image)} image is damaged (its hash differs)"
                )
                raise VerificationError(msg)
            layers += 1
    run.ok(
        index.digest,
        "index",
        "digests",
        f"index, {len(images)} manifests and configs, {layers} layers re-hashed",
    )


def _bundles(layout: Layout, subject: str) -> dict[str, list[Descriptor]]:
    """The signature bundles attached to `subject`, by predicate type."""
    found: dict[str, list[Descriptor]] = {}
    for descriptor in layout.referrers(subject, dsse.BUNDLE_TYPE):
        kind = descriptor.annotations.get(provenance.PREDICATE_ANNOTATION, dsse.COSIGN_SIGN)
        found.setdefault(kind, []).append(descriptor)
    return found


def _open(run: _Run, descriptor: Descriptor, *, what: str) -> Statement:
    manifest = run.layout.json_blob(descriptor.digest)
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        msg = f"{what}: the bundle artifact {descriptor.digest} holds {len(layers)} blobs, not one"
        raise VerificationError(msg)
    return run.trust.open(run.layout.blob(str(layers[0]["digest"])), what=what)


def _signature(run: _Run, subject: str, platform: str, bundles: list[Descriptor]) -> None:
    what = f"the signature of the {platform} {subject}"
    if not bundles:
        msg = f"the {platform} {subject} is not signed"
        raise VerificationError(
            msg, hint="sign it: omi-build sign LAYOUT --key cosign.key (or keyless in CI)"
        )
    failures = []
    for descriptor in bundles:
        try:
            statement = _open(run, descriptor, what=what)
        except VerificationError as exc:
            failures.append(exc)
            continue
        if statement.predicate_type != dsse.COSIGN_SIGN or not statement.names(subject):
            failures.append(
                VerificationError(f"{what}: the signed statement names {statement.subjects}, not {subject}")
            )
            continue
        run.ok(subject, platform, "signature", f"sigstore bundle v0.3 by {run.trust.describe()}")
        return
    raise failures[0]


def _classic(run: _Run, subject: str, platform: str) -> None:
    if run.trust.key is None or (tagged := run.layout.tagged(classic_tag(subject))) is None:
        return
    what = f"the classic signature of the {platform} {subject}"
    failures = []
    for layer in run.layout.json_blob(tagged.digest).get("layers", []):
        signature = (layer.get("annotations") or {}).get(simple.SIGNATURE_ANNOTATION, "")
        try:
            simple.verify(run.layout.blob(str(layer["digest"])), signature, run.trust.key, subject, what=what)
        except VerificationError as exc:
            failures.append(exc)
            continue
        run.ok(subject, platform, "classic signature", f"cosign simple signing, tag {classic_tag(subject)}")
        return
    if failures:
        raise failures[0]


def _unsigned_documents(layout: Layout, subject: str) -> dict[str, object]:
    """The SBOM documents the build attached to `subject`, by the predicate they are signed under."""
    found = {}
    for media_type, predicate in ATTESTATION_TYPES.items():
        for descriptor in layout.referrers(subject, media_type):
            blob = layout.json_blob(descriptor.digest)["layers"][0]
            found[predicate] = json.loads(layout.blob(str(blob["digest"])))
    return found


def _claims_trusted_key(run: _Run, descriptor: Descriptor) -> bool:
    """Whether a bundle names the trusted key as its signer (key mode only)."""
    key = run.trust.key
    if key is None:
        return False
    try:
        data = run.layout.blob(str(run.layout.json_blob(descriptor.digest)["layers"][0]["digest"]))
        hint = json.loads(data)["verificationMaterial"]["publicKey"]["hint"]
    except (LayoutError, ValueError, KeyError, TypeError, IndexError):
        return True  # unreadable: not evidence of another signer
    return hint in {key.hint(), key.model_signing_hint()}


def _by_trusted_signer(run: _Run, descriptors: list[Descriptor], *, what: str) -> list[Statement]:
    """The statements of the bundles the trusted signer made. Others' attestations are set
    aside (several parties may attest one image), but one claiming to be the trusted signer's
    must verify, and at least one must be there."""
    statements, failures = [], []
    for descriptor in descriptors:
        try:
            statements.append(_open(run, descriptor, what=what))
        except VerificationError as exc:
            if _claims_trusted_key(run, descriptor):
                raise
            failures.append(exc)
    if not statements:
        raise failures[0]
    return statements


def _attestations(run: _Run, subject: str, platform: str, bundles: dict[str, list[Descriptor]]) -> set[str]:
    """Verify every attestation attached to `subject`; the predicate types that verified."""
    documents = _unsigned_documents(run.layout, subject)
    verified = set()
    for predicate_type, descriptors in sorted(bundles.items()):
        if predicate_type == dsse.COSIGN_SIGN:
            continue
        what = f"the {predicate_type} attestation of the {platform} {subject}"
        matching = predicate_type not in documents
        trusted = _by_trusted_signer(run, descriptors, what=what)
        for statement in trusted:
            if statement.predicate_type != predicate_type:
                msg = f"{what}: it is annotated {predicate_type} but signs {statement.predicate_type}"
                raise VerificationError(msg)
            if predicate_type == provenance.MODEL_SIGNING:
                _model_files(run, statement, what=what)
            elif not statement.names(subject):
                msg = f"{what}: its subject is {statement.subjects}, not {subject}"
                raise VerificationError(msg)
            matching = matching or statement.predicate == documents[predicate_type]
        if not matching:  # an older signed SBOM may stay beside a newer one; one must be this one
            msg = f"{what}: no signed SBOM is the SBOM attached beside it"
            raise VerificationError(msg, hint="the SBOM was changed after signing; build and sign again")
        run.ok(subject, platform, predicate_type, f"signed by {run.trust.describe()}, subject matches")
        verified.add(predicate_type)
    return verified


def _model_files(run: _Run, statement: Statement, *, what: str) -> None:
    """A model-signing statement names the model, not the image: its files must be the image's
    model files, with the same digests (as the image's signed SBOMs list them)."""
    signed = {
        str(r.get("name")): str(r.get("digest"))
        for r in statement.predicate.get("resources", [])
        if isinstance(r, dict) and r.get("algorithm") == "sha256"
    }
    for image in run.layout.images():
        in_image = _sbom_model_files(run.layout, image.digest)
        if in_image is not None and in_image != signed:
            changed = sorted(set(signed.items()) ^ set(in_image.items()))
            msg = (
                f"{what}: the signed model files differ from the {_platform(image)} image's: {changed[0][0]}"
            )
            raise VerificationError(msg, hint="the model changed after signing; build and sign again")


def _sbom_model_files(layout: Layout, subject: str) -> dict[str, str] | None:
    """The model files (path relative to the model folder -> sha256) an image's SPDX SBOM lists."""
    document = _unsigned_documents(layout, subject).get(SPDX_PREDICATE)
    if not isinstance(document, dict):
        return None
    prefix = f"/{MODEL_DIR}/"
    return {
        str(p["name"]).removeprefix(prefix): str(p["checksums"][0]["checksumValue"])
        for p in document.get("packages", [])
        if p.get("primaryPackagePurpose") == "FILE" and str(p.get("name", "")).startswith(prefix)
    }


def _required(run: _Run, subject: str, platform: str, verified: set[str], *, index: bool) -> None:
    for requirement in sorted(run.trust.require):
        if requirement == "model":
            if index and provenance.MODEL_SIGNING not in verified:
                msg = f"the {platform} {subject} has no signed model-signing attestation (--require model)"
                raise VerificationError(
                    msg, hint="sign the layout with omi-build sign; it signs the model files too"
                )
            continue
        if not index and not verified.intersection(_REQUIRED_PREDICATES[requirement]):
            msg = (
                f"the {platform} {subject} has no signed {requirement} attestation (--require {requirement})"
            )
            raise VerificationError(msg, hint="sign the layout with omi-build sign after building it")


def verify(layout: Layout, trust: Trust, *, tag: str | None = None) -> list[Check]:
    """Verify the target index `tag` of `layout` (see the module); the checks that passed, or a
    VerificationError naming the first thing that did not (with the checks before it)."""
    unknown = trust.require - set(REQUIREMENTS)
    if unknown:
        msg = f"cannot require {', '.join(sorted(unknown))}"
        raise VerificationError(msg, hint=f"--require takes {', '.join(REQUIREMENTS)}")
    unchecked = trust.key is None and trust.identity is None
    if unchecked and not trust.signatures_optional:
        msg = "no key and no identity to verify against"
        raise VerificationError(msg, hint=_SIGNER_HINT)
    if unchecked and trust.require:
        msg = f"--require {','.join(sorted(trust.require))} needs a key or an identity to trust"
        raise VerificationError(msg, hint=_SIGNER_HINT)
    run = _Run(layout, trust)
    holder: dict[str, object] = {}

    def read() -> None:
        holder["index"] = layout.target_index(tag)
        holder["images"] = layout.images(tag)

    run.guarded(read)
    index: Descriptor = holder["index"]  # type: ignore[assignment]
    images: list[Image] = holder["images"]  # type: ignore[assignment]
    run.guarded(lambda: _check_blobs(run, index, images))
    if unchecked:
        run.ok(index.digest, "index", "signature", "not checked: security.signing.required is false")
        return run.checks
    subjects = [(index.digest, "index", True)] + [(i.digest, _platform(i), False) for i in images]
    for subject, platform, is_index in subjects:

        def one(subject: str = subject, platform: str = platform, is_index: bool = is_index) -> None:
            bundles = _bundles(layout, subject)
            _signature(run, subject, platform, bundles.get(dsse.COSIGN_SIGN, []))
            _classic(run, subject, platform)
            verified = _attestations(run, subject, platform, bundles)
            _required(run, subject, platform, verified, index=is_index)

        run.guarded(one)
    return run.checks


__all__ = ["REQUIREMENTS", "Check", "Trust", "verify"]
