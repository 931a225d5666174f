"""cosign's classic image signature ('simple signing'), which cosign 1.x and 2.x verify.

The signed payload names the image manifest's digest under `critical.image`; the signature
(ASN.1 DER ECDSA, base64) rides as an annotation on the one layer of a small OCI image that
the layout (or registry) tags `sha256-<hex>.sig`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from omi_build.errors import VerificationError

from .keys import PublicKey

MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
KIND = "cosign container image signature"


def payload(reference: str, digest: str) -> bytes:
    """The payload exactly as cosign marshals it (Go's field order, no spaces)."""
    document = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": KIND,
        },
        "optional": None,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def signed_digest(data: bytes, *, what: str) -> str:
    """The manifest digest a simple-signing payload names (cosign matches the key case-insensitively)."""
    try:
        document = json.loads(data)
        critical = {k.lower(): v for k, v in document["critical"].items()}
        image = {k.lower(): v for k, v in critical["image"].items()}
        digest, kind = image["docker-manifest-digest"], critical["type"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"{what}: the payload is not a cosign simple-signing document ({exc})"
        raise VerificationError(msg) from exc
    if kind != KIND or not isinstance(digest, str):
        msg = f"{what}: the payload's type is {kind!r}, not {KIND!r}"
        raise VerificationError(msg)
    return digest


def verify(data: bytes, signature: str, key: PublicKey, manifest_digest: str, *, what: str) -> None:
    """Check one classic signature: by `key`, over `data`, naming `manifest_digest`."""
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"{what}: the signature is not base64"
        raise VerificationError(msg) from exc
    if not key.verifies(raw_signature, data):
        msg = f"{what}: the signature does not verify with the given key"
        raise VerificationError(msg, hint="check that you pass the public key of the key that signed it")
    named = signed_digest(data, what=what)
    if named != manifest_digest:
        msg = f"{what}: the signature is for {named}, not for this image's manifest {manifest_digest}"
        raise VerificationError(msg, hint="the image changed after it was signed; sign it again")


def containers_image_signature(data: bytes) -> tuple[bytes, str, dict[str, Any]]:
    """containers/image's on-disk form of a cosign signature: (payload, signature, annotations)."""
    prefix = b"\x00sigstore-json\n"
    if not data.startswith(prefix):
        msg = "not a containers/image sigstore signature"
        raise VerificationError(msg)
    try:
        raw = json.loads(data[len(prefix) :])
        annotations = dict(raw.get("annotations") or {})
        return base64.b64decode(raw["payload"]), str(annotations.get(SIGNATURE_ANNOTATION, "")), annotations
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"not a containers/image sigstore signature ({exc})"
        raise VerificationError(msg) from exc
