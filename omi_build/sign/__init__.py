"""The sign stage: sign a built layout's images, index, attestations and model files.

For each platform image, and for the target's index:
  - a sigstore bundle v0.3 over an in-toto statement naming the manifest's digest
    (predicate `https://sigstore.dev/cosign/sign/v1`), attached as an OCI 1.1 referrer with
    artifactType `application/vnd.dev.sigstore.bundle.v0.3+json`, as cosign v3 does;
  - with a key, also cosign's classic simple-signing signature under the `sha256-<hex>.sig` tag;
  - the attestations the build left unsigned beside each image (SPDX, CycloneDX, SLSA
    provenance), each signed into a bundle and attached with its predicate type annotated;
  - the model files' model-signing statement, signed, attached to the index and written beside
    the layout as `<layout>.model.sig` for `model_signing verify`.
Signing changes index.json only: no image or index digest moves.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Protocol

from omi_build import atomic, provenance, sbom
from omi_build.digests import canonical, digest_of
from omi_build.errors import SigningError
from omi_build.image.layout import EMPTY_JSON, INDEX_TYPE, MANIFEST_TYPE, Descriptor, Layout
from omi_build.image.layout import tag_of_signature as classic_tag

from . import dsse, simple
from .keys import PrivateKey

__all__ = [
    "ATTESTATION_TYPES", "CONTENT_ANNOTATION", "CYCLONEDX_PREDICATE", "SPDX_PREDICATE",
    "KeySigner", "Signed", "Signer", "classic_tag", "sign",
]  # fmt: skip

CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
SPDX_PREDICATE = "https://spdx.dev/Document"
CYCLONEDX_PREDICATE = "https://cyclonedx.org/bom"
# The build's unsigned documents and the predicate each is signed under.
ATTESTATION_TYPES = {sbom.SPDX_TYPE: SPDX_PREDICATE, sbom.CYCLONEDX_TYPE: CYCLONEDX_PREDICATE}
_MAX_CLASSIC_SIGNATURES = 16  # a .sig image keeps the newest this many signatures


class Signer(Protocol):
    identity: str

    def bundle(self, statement: bytes, *, model: bool = False) -> bytes: ...


class KeySigner:
    """Signs with a cosign key: bundles with a public-key hint, and classic signatures."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.identity = f"key {key.public.hint()}"

    def bundle(self, statement: bytes, *, model: bool = False) -> bytes:
        # model_signing checks its own form of key id; cosign's verifiers read the other
        hint = self.key.public.model_signing_hint() if model else None
        return dsse.key_bundle(statement, self.key, hint=hint)

    def classic(self, payload: bytes) -> str:
        return base64.b64encode(self.key.sign(payload)).decode()


@dataclass(frozen=True, kw_only=True, slots=True)
class Signed:
    """One thing signed: what (signature, an attestation's predicate, classic, model), whose
    digest, and the artifact that holds the signature."""

    kind: str
    subject: str
    platform: str
    artifact: str


def _bundle_annotations(predicate_type: str) -> dict[str, str]:
    return {CONTENT_ANNOTATION: "dsse-envelope", provenance.PREDICATE_ANNOTATION: predicate_type}


def _attach_bundle(layout: Layout, subject: Descriptor, bundle: bytes, predicate_type: str) -> Descriptor:
    return layout.attach(
        subject,
        dsse.BUNDLE_TYPE,
        [(dsse.BUNDLE_TYPE, bundle)],
        annotations=_bundle_annotations(predicate_type),
    )


def _classic(layout: Layout, signer: KeySigner, subject: Descriptor, reference: str) -> Descriptor:
    """cosign's classic signature image for `subject`, appended to any signatures it has."""
    payload = simple.payload(reference, subject.digest)
    layer = {
        "mediaType": simple.MEDIA_TYPE,
        "digest": digest_of(payload),
        "size": len(payload),
        "annotations": {simple.SIGNATURE_ANNOTATION: signer.classic(payload)},
    }
    tag = classic_tag(subject.digest)
    layers = []
    if (existing := layout.tagged(tag)) is not None:
        layers = [
            entry for entry in layout.json_blob(existing.digest).get("layers", []) if isinstance(entry, dict)
        ]
    layers = [*layers, layer][-_MAX_CLASSIC_SIGNATURES:]
    config = canonical(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [entry["digest"] for entry in layers]},
        }
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": layers,
    }
    return layout.put_tagged(tag, manifest, [config, payload, EMPTY_JSON])


def _document_statement(name: str, digest: str, media_type: str, data: bytes) -> bytes:
    try:
        document = json.loads(data)
    except ValueError as exc:
        msg = f"the {media_type} document attached to {digest} is not JSON"
        raise SigningError(msg, hint="build the image again") from exc
    return dsse.statement({name: digest}, ATTESTATION_TYPES[media_type], document)


def _unsigned(layout: Layout, subject: str) -> list[tuple[str, bytes]]:
    """The build's documents attached to `subject`: (media type, bytes)."""
    found = []
    for descriptor in layout.referrers(subject):
        if descriptor.artifact_type in {*ATTESTATION_TYPES, provenance.STATEMENT_TYPE}:
            artifact = layout.json_blob(descriptor.digest)
            for blob in artifact.get("layers", []):
                found.append((str(blob["mediaType"]), layout.blob(str(blob["digest"]))))
    return found


def sign(layout: Layout, signer: Signer, *, reference: str, tag: str | None = None) -> list[Signed]:
    """Sign the target index `tag` of `layout` and everything attached to it (see the module)."""
    signed: list[Signed] = []
    index = layout.target_index(tag)
    index_subject = Descriptor(media_type=INDEX_TYPE, digest=index.digest, size=index.size, annotations={})
    subjects = [(index_subject, "index")]
    subjects += [
        (Descriptor(media_type=MANIFEST_TYPE, digest=i.digest, size=i.descriptor.size, annotations={}),
         f"{i.platform.get('os', 'linux')}/{i.architecture}")
        for i in layout.images(tag)
    ]  # fmt: skip
    for subject, platform in subjects:
        statement = dsse.statement({reference: subject.digest}, dsse.COSIGN_SIGN, {})
        artifact = _attach_bundle(layout, subject, signer.bundle(statement), dsse.COSIGN_SIGN)
        signed.append(
            Signed(kind="signature", subject=subject.digest, platform=platform, artifact=artifact.digest)
        )
        if isinstance(signer, KeySigner):
            classic = _classic(layout, signer, subject, reference)
            signed.append(
                Signed(kind="classic", subject=subject.digest, platform=platform, artifact=classic.digest)
            )
        for media_type, data in _unsigned(layout, subject.digest):
            if media_type == provenance.STATEMENT_TYPE:
                statement = data
                predicate_type = dsse.parse_statement(data, what="an attached statement").predicate_type
            else:
                statement = _document_statement(reference, subject.digest, media_type, data)
                predicate_type = ATTESTATION_TYPES[media_type]
            bundle = signer.bundle(statement, model=predicate_type == provenance.MODEL_SIGNING)
            artifact = _attach_bundle(layout, subject, bundle, predicate_type)
            signed.append(
                Signed(
                    kind=predicate_type, subject=subject.digest, platform=platform, artifact=artifact.digest
                )
            )
            if predicate_type == provenance.MODEL_SIGNING:
                path = layout.directory.with_name(
                    f"{layout.directory.name}.{provenance.MODEL_SIGNATURE_FILE}"
                )
                atomic.write_bytes(path, bundle)
    return signed
