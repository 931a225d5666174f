"""DSSE envelopes over in-toto statements, in sigstore bundles v0.3, as cosign v3 writes them.

A key-signed bundle carries a public-key hint instead of a certificate and no transparency-log
entry (nothing here reaches Rekor); a keyless one comes from sigstore-python (see keyless.py).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from omi_build.digests import canonical
from omi_build.errors import VerificationError

from .keys import PrivateKey, PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_TYPES = frozenset({BUNDLE_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"})
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"  # what cosign 2.x attestations use
COSIGN_SIGN = "https://sigstore.dev/cosign/sign/v1"  # cosign v3's predicate for 'cosign sign'


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def statement(subjects: dict[str, str], predicate_type: str, predicate: dict[str, Any]) -> bytes:
    """An in-toto Statement v1; `subjects` maps a name to its 'sha256:<hex>' digest."""
    return canonical(
        {
            "_type": STATEMENT_V1,
            "subject": [
                {"name": name, "digest": {"sha256": digest.removeprefix("sha256:")}}
                for name, digest in subjects.items()
            ],
            "predicateType": predicate_type,
            "predicate": predicate,
        }
    )


def envelope(payload: bytes, key: PrivateKey) -> dict[str, Any]:
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
    }


def key_bundle(payload: bytes, key: PrivateKey, *, hint: str | None = None) -> bytes:
    """A sigstore bundle v0.3 holding a DSSE envelope signed by `key` (hint: cosign's key id
    unless another is given)."""
    return canonical(
        {
            "mediaType": BUNDLE_TYPE,
            "verificationMaterial": {"publicKey": {"hint": hint or key.public.hint()}, "tlogEntries": []},
            "dsseEnvelope": envelope(payload, key),
        }
    )


@dataclass(frozen=True, slots=True)
class Statement:
    """A verified in-toto statement: its subjects (name -> sha256 hex) and predicate."""

    predicate_type: str
    subjects: dict[str, str]
    predicate: dict[str, Any]

    def names(self, digest: str) -> bool:
        """Whether `digest` ('sha256:<hex>') is one of the statement's subjects."""
        return digest.removeprefix("sha256:") in self.subjects.values()


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        msg = f"{what} is not a base64 string"
        raise VerificationError(msg)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"{what} is not valid base64"
        raise VerificationError(msg) from exc


def parse_statement(payload: bytes, *, what: str) -> Statement:
    """An in-toto statement (v1, or v0.1 as cosign 2.x writes), checked for shape."""
    try:
        raw = json.loads(payload)
        kind, subjects = raw["_type"], raw["subject"]
        parsed = {
            str(s.get("name", "")): str(s["digest"]["sha256"]).lower()
            for s in subjects
            if "sha256" in s["digest"]
        }
        predicate_type = str(raw["predicateType"])
        predicate = raw.get("predicate") or {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        msg = f"{what}: the signed payload is not an in-toto statement ({exc})"
        raise VerificationError(msg) from exc
    if kind not in {STATEMENT_V1, STATEMENT_V01} or not parsed or not isinstance(predicate, dict):
        msg = f"{what}: the signed payload is not an in-toto statement v1 or v0.1 with a sha256 subject"
        raise VerificationError(msg)
    return Statement(predicate_type, parsed, predicate)


def open_envelope(raw: dict[str, Any], key: PublicKey, *, what: str) -> bytes:
    """The payload of a DSSE envelope, once one of its signatures verifies with `key`."""
    if raw.get("payloadType") != PAYLOAD_TYPE:
        msg = f"{what}: the envelope's payload type is {raw.get('payloadType')!r}, not {PAYLOAD_TYPE}"
        raise VerificationError(msg)
    payload = _b64(raw.get("payload"), f"{what}: the payload")
    signatures = raw.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        msg = f"{what}: the envelope holds no signature"
        raise VerificationError(msg)
    message = pae(PAYLOAD_TYPE, payload)
    for entry in signatures:
        if isinstance(entry, dict) and key.verifies(_b64(entry.get("sig"), f"{what}: a signature"), message):
            return payload
    msg = f"{what}: the signature does not verify with the given key"
    raise VerificationError(msg, hint="check that you pass the public key of the key that signed it")


def load_bundle(data: bytes, *, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError as exc:
        msg = f"{what} is not JSON ({exc})"
        raise VerificationError(msg) from exc
    if not isinstance(raw, dict) or raw.get("mediaType") not in BUNDLE_TYPES | {
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle.v0.2+json",
    }:
        kind = raw.get("mediaType") if isinstance(raw, dict) else None
        msg = f"{what} is not a sigstore bundle (mediaType {kind!r})"
        raise VerificationError(msg)
    return raw


def open_key_bundle(data: bytes, key: PublicKey, *, what: str) -> Statement:
    """The statement of a key-signed DSSE bundle, verified with `key`."""
    raw = load_bundle(data, what=what)
    material = raw.get("verificationMaterial") or {}
    if "publicKey" not in material:
        msg = f"{what} is signed with a certificate (keyless), not a key"
        raise VerificationError(msg, hint="verify with --certificate-identity and --certificate-oidc-issuer")
    envelope_raw = raw.get("dsseEnvelope")
    if not isinstance(envelope_raw, dict):
        msg = f"{what} holds no DSSE envelope"
        raise VerificationError(msg)
    return parse_statement(open_envelope(envelope_raw, key, what=what), what=what)
