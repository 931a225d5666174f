"""OpenSSF model signatures (model-signing v1.0, as `model_signing sign` writes them): verify
one over a model folder, with a key or a keyless identity.

The signature is a sigstore bundle over an in-toto statement whose predicate lists every
signed file with its sha256, and whose subject digest is the sha256 of those digests in order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omi_build.errors import VerificationError
from omi_build.provenance import MODEL_SIGNING
from omi_build.store import sha256_file

from . import dsse, keyless
from .keys import PublicKey


def signed_files(
    signature: bytes,
    *,
    key: PublicKey | None = None,
    identity: keyless.Identity | None = None,
    trusted_root: Path | None = None,
    what: str = "the model signature",
) -> dict[str, str]:
    """The files a model signature covers (relative path -> sha256 hex), once the signature
    verifies and its subject digest agrees with the file list."""
    raw = dsse.load_bundle(signature, what=what)
    material = raw.get("verificationMaterial")
    if isinstance(material, dict) and "x509CertificateChain" in material:
        msg = f"{what} is signed with a private certificate chain (model_signing sign certificate)"
        raise VerificationError(
            msg, hint="omi-build checks key and sigstore keyless model signatures; have it signed so"
        )
    if key is not None:
        envelope = raw.get("dsseEnvelope")
        if not isinstance(envelope, dict):
            msg = f"{what} holds no DSSE envelope"
            raise VerificationError(msg)
        statement = dsse.parse_statement(dsse.open_envelope(envelope, key, what=what), what=what)
    elif identity is not None:
        statement = keyless.open_bundle(signature, identity, trusted_root=trusted_root, what=what)
    else:
        msg = f"{what}: no key and no identity to verify it against"
        raise VerificationError(msg)
    if statement.predicate_type != MODEL_SIGNING:
        msg = f"{what} signs a {statement.predicate_type} statement, not a model signature"
        raise VerificationError(msg)
    try:
        resources = [(str(r["name"]), str(r["digest"]).lower()) for r in statement.predicate["resources"]]
        root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in resources)).hexdigest()
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{what}: its list of files is malformed ({exc})"
        raise VerificationError(msg) from exc
    if root not in statement.subjects.values():
        msg = f"{what}: its file list does not hash to its signed subject"
        raise VerificationError(msg)
    return dict(resources)


def check_files(directory: Path, signed: dict[str, str], files: dict[str, str] | None = None) -> None:
    """Every file of `files` (relative path -> sha256 hex; default: every signed file, hashed
    now) is signed with that digest, and every signed file is there. Names the first that is not."""
    if files is None:
        files = {}
        for name in signed:
            path = directory / name
            if not path.is_file():
                msg = f"'{name}' is signed but missing from {directory}"
                raise VerificationError(msg)
            files[name] = sha256_file(path)
    for name, digest in sorted(files.items()):
        if name not in signed:
            msg = f"'{name}' is not covered by the model signature"
            raise VerificationError(
                msg, hint="sign the model again including it, or leave it out of model.files"
            )
        if signed[name] != digest:
            msg = f"hash mismatch for '{name}': it is not the file that was signed"
            raise VerificationError(msg, hint="restore the signed file, or have the model signed again")
    missing = sorted(set(signed) - set(files))
    if missing:
        msg = f"'{missing[0]}' is signed but not among the model files"
        raise VerificationError(msg, hint="add it to model.files, or have the model signed without it")
