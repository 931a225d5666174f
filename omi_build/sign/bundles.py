"""Verify any sigstore bundle against the artifact it signs: keyless (through sigstore-python,
offline against a trusted root) or with a managed key (which sigstore-python cannot do).

With a key, the signature is checked over the artifact (a message signature) or over the DSSE
envelope whose statement names the artifact's sha256; each transparency-log entry the bundle
carries is checked too: its inclusion proof, signed checkpoint and signed entry timestamp
against the trusted root's Rekor keys, and that it records this signature, key and digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from omi_build.errors import VerificationError

from . import dsse, keyless
from .keys import PublicKey


def _b64(value: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"{what} is not valid base64"
        raise VerificationError(msg) from exc


def _rekor_keyring(trusted_root: Path | None) -> Any:
    from sigstore._internal.trust import KeyringPurpose  # noqa: PLC0415 - pinned sigstore==4.5.1
    from sigstore.models import ClientTrustConfig, TrustedRoot  # noqa: PLC0415

    try:
        root = (
            TrustedRoot.from_file(str(trusted_root))
            if trusted_root is not None
            else ClientTrustConfig.production(offline=True).trusted_root
        )
        return root.rekor_keyring(KeyringPurpose.VERIFY)
    except Exception as exc:
        msg = f"no Rekor keys in the trusted root ({exc})"
        raise VerificationError(msg, hint="pass --trusted-root with the log's keys") from exc


def _check_log_entries(entries: list[Any], *, key: PublicKey, signature: bytes, digest: str, kind: str,
                       trusted_root: Path | None) -> None:  # fmt: skip
    from sigstore.models import TransparencyLogEntry  # noqa: PLC0415
    from sigstore_models.rekor.v1 import TransparencyLogEntry as _TransparencyLogEntry  # noqa: PLC0415

    keyring = _rekor_keyring(trusted_root)
    for raw in entries:
        try:
            entry = TransparencyLogEntry(_TransparencyLogEntry.from_dict(raw))
            entry._verify(keyring)  # noqa: SLF001 - sigstore's own proof checks, pinned version
        except Exception as exc:
            msg = f"the transparency-log entry does not verify: {exc}"
            raise VerificationError(msg) from exc
        body = json.loads(_b64(raw.get("canonicalizedBody"), "the log entry's body"))
        spec = body.get("spec", {})
        if body.get("kind") == "hashedrekord" and kind == "message":
            recorded_key = _b64(spec["signature"]["publicKey"]["content"], "the logged key")
            consistent = (
                spec["data"]["hash"]["value"] == digest
                and _b64(spec["signature"]["content"], "the logged signature") == signature
                and PublicKey.from_pem(recorded_key, what="the logged key").der() == key.der()
            )
        elif body.get("kind") == "dsse" and kind == "dsse":
            logged = [
                (_b64(s["signature"], "the logged signature"), _b64(s["verifier"], "the logged key"))
                for s in spec.get("signatures", [])
            ]
            consistent = spec.get("payloadHash", {}).get("value") == digest and any(
                sig == signature and PublicKey.from_pem(pem, what="the logged key").der() == key.der()
                for sig, pem in logged
            )
        else:
            consistent = False
        if not consistent:
            msg = "the transparency-log entry is inconsistent with the bundle's signature, key or artifact"
            raise VerificationError(msg)


def _with_key(raw: dict[str, Any], artifact: bytes, key: PublicKey, trusted_root: Path | None) -> str:
    material = raw.get("verificationMaterial") or {}
    if "publicKey" not in material:
        msg = "the bundle is signed with a certificate, not a key"
        raise VerificationError(msg, hint="verify it with an identity instead of a key")
    digest = hashlib.sha256(artifact).hexdigest()
    if (message := raw.get("messageSignature")) is not None:
        signature = _b64(message.get("signature"), "the signature")
        stated = message.get("messageDigest", {}).get("digest")
        if stated is not None and _b64(stated, "the message digest").hex() != digest:
            msg = "the bundle's message digest is not the artifact's sha256"
            raise VerificationError(msg)
        if not key.verifies(signature, artifact):
            msg = "the signature does not verify with the given key"
            raise VerificationError(msg)
        kind, logged_digest, result = "message", digest, "message signature"
    elif isinstance(envelope := raw.get("dsseEnvelope"), dict):
        payload = dsse.open_envelope(envelope, key, what="the bundle")
        statement = dsse.parse_statement(payload, what="the bundle")
        if not statement.names(digest):
            msg = f"the signed statement names {statement.subjects}, not the artifact (sha256 {digest})"
            raise VerificationError(msg)
        signature = _b64(envelope["signatures"][0]["sig"], "the signature")
        kind, logged_digest, result = "dsse", hashlib.sha256(payload).hexdigest(), statement.predicate_type
    else:
        msg = "the bundle holds neither a message signature nor a DSSE envelope"
        raise VerificationError(msg)
    entries = material.get("tlogEntries") or []
    if entries:
        _check_log_entries(entries, key=key, signature=signature, digest=logged_digest, kind=kind,
                           trusted_root=trusted_root)  # fmt: skip
    return result


def verify_bundle(
    data: bytes,
    artifact: bytes,
    *,
    key: PublicKey | None = None,
    identity: keyless.Identity | None = None,
    trusted_root: Path | None = None,
) -> str:
    """Verify the bundle `data` over `artifact`; what it signs ('message signature', or the
    DSSE statement's predicate type). Raises VerificationError saying why not."""
    raw = dsse.load_bundle(data, what="the bundle")
    if key is not None:
        return _with_key(raw, artifact, key, trusted_root)
    if identity is None:
        msg = "no key and no identity to verify the bundle against"
        raise VerificationError(msg)
    if "dsseEnvelope" in raw:
        statement = keyless.open_bundle(data, identity, trusted_root=trusted_root, what="the bundle")
        digest = hashlib.sha256(artifact).hexdigest()
        if not statement.names(digest):
            msg = f"the signed statement names {statement.subjects}, not the artifact (sha256 {digest})"
            raise VerificationError(msg)
        return statement.predicate_type
    keyless.verify_artifact(data, artifact, identity, trusted_root=trusted_root)
    return "message signature"
