"""cosign's key files: an ECDSA P-256 key pair, the private half encrypted with a password.

The private key file is PEM whose body is JSON: the key derivation (scrypt, with its salt and
parameters), the cipher (NaCl secretbox, with its nonce) and the ciphertext of the PKCS#8 DER
key. The public key is plain PEM (SubjectPublicKeyInfo). cosign reads both labels below; it
refuses a key whose plaintext is not PKCS#8 (an SEC1 'EC PRIVATE KEY'), and so does this.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from omi_build.errors import SigningKeyError

PRIVATE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"  # what cosign writes today
LEGACY_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"  # what cosign wrote before, and still reads
_SCRYPT_N = 32768  # cosign's own parameters for a new key
_SCRYPT_R = 8
_SCRYPT_P = 1
_MAX_SCRYPT_N = 1 << 20  # a file asking for more is hostile, not a key (1 GiB of memory)
_SECRETBOX_KEY = 32
_SECRETBOX_NONCE = 24
_SEQUENCE = 0x30
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key: ECDSA P-256 (what cosign makes) or any key `cryptography` loads."""

    key: ec.EllipticCurvePublicKey

    @classmethod
    def from_pem(cls, data: bytes, *, what: str = "the public key") -> PublicKey:
        try:
            loaded = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            msg = f"{what} is not a PEM public key ({exc})"
            raise SigningKeyError(
                msg, hint="pass the cosign.pub that 'omi-build keygen' or cosign wrote"
            ) from exc
        if not isinstance(loaded, ec.EllipticCurvePublicKey):
            msg = f"{what} is a {type(loaded).__name__}, not an ECDSA key"
            raise SigningKeyError(msg, hint="cosign keys are ECDSA P-256; make one with 'omi-build keygen'")
        return cls(loaded)

    def der(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def hint(self) -> str:
        """The key's id in a sigstore bundle: base64 of the sha256 of its DER form."""
        return base64.b64encode(hashlib.sha256(self.der()).digest()).decode()

    def model_signing_hint(self) -> str:
        """The key's id as OpenSSF model signing writes and checks it: hex sha256 of its PEM."""
        return hashlib.sha256(self.pem()).hexdigest()

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` (ASN.1 DER ECDSA, with the curve's hash: SHA-256 for P-256, as
        cosign signs; SHA-384 and SHA-512 for P-384 and P-521, as model signing does) is this
        key's over `data`."""
        digest = _CURVE_HASHES.get(self.key.curve.name, hashes.SHA256)()
        try:
            self.key.verify(signature, data, ec.ECDSA(digest))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class PrivateKey:
    key: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def generate() -> PrivateKey:
    return PrivateKey(ec.generate_private_key(ec.SECP256R1()))


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=_SECRETBOX_KEY, n=n, r=r, p=p).derive(password)


def _pem(label: str, body: bytes) -> bytes:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


def encrypt(key: PrivateKey, password: bytes) -> bytes:
    """The key as cosign writes `cosign.key`."""
    import nacl.secret  # noqa: PLC0415 - only signing needs NaCl

    der = key.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(32), os.urandom(_SECRETBOX_NONCE)
    box = nacl.secret.SecretBox(_scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P))
    ciphertext = box.encrypt(der, nonce).ciphertext
    envelope = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": _SCRYPT_N, "r": _SCRYPT_R, "p": _SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return _pem(PRIVATE_LABEL, json.dumps(envelope, separators=(",", ":")).encode())


def _pem_body(data: bytes, what: str) -> tuple[str, bytes]:
    text = data.decode("ascii", errors="replace").strip()
    lines = text.splitlines()
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        msg = f"{what} is not a PEM file"
        raise SigningKeyError(msg, hint="pass the cosign.key that 'omi-build keygen' or cosign wrote")
    label = lines[0].removeprefix("-----BEGIN ").removesuffix("-----")
    if label not in {PRIVATE_LABEL, LEGACY_LABEL}:
        msg = f"{what} is a '{label}', not a cosign private key"
        raise SigningKeyError(
            msg, hint=f"cosign keys are '{PRIVATE_LABEL}'; make one with 'omi-build keygen'"
        )
    try:
        return label, base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError as exc:
        msg = f"{what}: its PEM body is not base64"
        raise SigningKeyError(msg) from exc


def envelope_of(data: bytes, *, what: str = "the key file") -> dict[str, Any]:
    """The key file's JSON envelope, checked for the algorithms cosign uses (no decryption)."""
    _, body = _pem_body(data, what)
    try:
        envelope = json.loads(body)
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        params = kdf["params"]
        checked = (
            kdf["name"] == "scrypt"
            and cipher["name"] == "nacl/secretbox"
            and all(isinstance(params[k], int) and params[k] > 0 for k in ("N", "r", "p"))
            and isinstance(envelope["ciphertext"], str)
        )
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{what} does not hold cosign's encrypted-key JSON ({exc})"
        raise SigningKeyError(msg) from exc
    if not checked:
        used = f"{kdf.get('name')!r} and {cipher.get('name')!r}"
        msg = f"{what} uses {used}; cosign keys use scrypt and nacl/secretbox"
        raise SigningKeyError(msg)
    if params["N"] > _MAX_SCRYPT_N or params["N"] & (params["N"] - 1) or params["r"] * params["p"] >= 1 << 30:
        msg = f"{what} asks for scrypt N={params['N']} r={params['r']} p={params['p']}, out of cosign's range"
        raise SigningKeyError(msg)
    return dict(envelope)


def decrypt(data: bytes, password: bytes, *, what: str = "the key file") -> PrivateKey:
    """Import a cosign private key; a wrong password or a damaged file is a SigningKeyError."""
    import nacl.exceptions  # noqa: PLC0415
    import nacl.secret  # noqa: PLC0415

    envelope = envelope_of(data, what=what)
    kdf, params = envelope["kdf"], envelope["kdf"]["params"]
    try:
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(envelope["cipher"]["nonce"], validate=True)
        ciphertext = base64.b64decode(envelope["ciphertext"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"{what}: its salt, nonce or ciphertext is not base64"
        raise SigningKeyError(msg) from exc
    if len(nonce) != _SECRETBOX_NONCE:
        msg = f"{what}: the secretbox nonce is {len(nonce)} bytes, not {_SECRETBOX_NONCE}"
        raise SigningKeyError(msg)
    box = nacl.secret.SecretBox(_scrypt(password, salt, params["N"], params["r"], params["p"]))
    try:
        der = box.decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError as exc:
        msg = f"cannot decrypt {what}: wrong password, or the file is damaged"
        raise SigningKeyError(msg, hint="set COSIGN_PASSWORD to the key's password") from exc
    return PrivateKey(_pkcs8_ec_key(der, what))


def _pkcs8_ec_key(der: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    # PKCS#8 is SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING key }; SEC1 is
    # SEQUENCE { INTEGER 1, OCTET STRING key, ... }. The second element tells them apart, and
    # cosign (Go's x509.ParsePKCS8PrivateKey) takes only the first.
    if not _second_element_is_sequence(der):
        msg = f"{what} holds an SEC1 'EC PRIVATE KEY', not PKCS#8, and cosign refuses those"
        raise SigningKeyError(
            msg, hint="make a new key pair with 'omi-build keygen' (or 'cosign generate-key-pair')"
        )
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        msg = f"{what} decrypts to no private key ({exc})"
        raise SigningKeyError(msg) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = type(key).__name__
        msg = f"{what} holds a {kind}; omi-build signs with ECDSA P-256 keys, as cosign makes them"
        raise SigningKeyError(msg, hint="make a key pair with 'omi-build keygen'")
    return key


def _der_length(der: bytes, at: int) -> tuple[int, int]:
    """The length of the DER element whose length octets start at `at`, and where its body starts."""
    first = der[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    return int.from_bytes(der[at + 1 : at + 1 + count], "big"), at + 1 + count


def _second_element_is_sequence(der: bytes) -> bool:
    try:
        if der[0] != _SEQUENCE:
            return False
        _, body = _der_length(der, 1)
        length, start = _der_length(der, body + 1)  # the first element: the version INTEGER
        return der[start + length] == _SEQUENCE
    except IndexError:
        return False
