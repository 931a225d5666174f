"""cosign key files: the vectors from cosign's own tests import (or are refused) as cosign does."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from omi_build import api
from omi_build.errors import SigningKeyError
from omi_build.sign import keys

KEYS = Path(__file__).resolve().parents[1] / "vectors" / "cosign-keys"


@pytest.mark.parametrize("name", ["sigstore-labeled", "cosign-labeled-rsa"])
def test_cosign_keys_import_with_their_password(name: str) -> None:
    key = keys.decrypt((KEYS / f"{name}.key").read_bytes(), b"hello")
    assert key.public.pem() == (KEYS / f"{name}.expected.pub").read_bytes()


@pytest.mark.parametrize("name", ["sigstore-labeled", "cosign-labeled-rsa", "cosign-labeled-ec-sec1"])
def test_a_wrong_password_fails(name: str) -> None:
    with pytest.raises(SigningKeyError, match="wrong password"):
        keys.decrypt((KEYS / f"{name}.key").read_bytes(), b"wrong")


def test_an_sec1_key_is_refused_as_cosign_refuses_it() -> None:
    with pytest.raises(SigningKeyError, match="SEC1"):
        keys.decrypt((KEYS / "cosign-labeled-ec-sec1.key").read_bytes(), b"hello")


def test_the_envelope_of_a_key_whose_password_is_unknown_parses() -> None:
    envelope = keys.envelope_of((KEYS / "cosign-ci-test.key").read_bytes())
    assert envelope["kdf"]["name"] == "scrypt"
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    keys.PublicKey.from_pem((KEYS / "cosign-ci-test.pub").read_bytes())


def test_a_new_key_round_trips_and_uses_cosigns_format() -> None:
    key = keys.generate()
    pem = keys.encrypt(key, b"secret")
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = json.loads(base64.b64decode(b"".join(pem.splitlines()[1:-1])))
    assert body["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert keys.decrypt(pem, b"secret").public.pem() == key.public.pem()
    signature = key.sign(b"data")
    assert key.public.verifies(signature, b"data")
    assert not key.public.verifies(signature, b"other")


def _envelope_pem(envelope: dict[str, object], label: str = keys.PRIVATE_LABEL) -> bytes:
    body = base64.b64encode(json.dumps(envelope).encode()).decode()
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a key", "not a PEM file"),
        (
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "not a cosign private key",
        ),
        (_envelope_pem({"kdf": {}}), "encrypted-key JSON"),
        (
            _envelope_pem(
                {
                    "kdf": {"name": "scrypt", "params": {"N": 1 << 30, "r": 8, "p": 1}, "salt": ""},
                    "cipher": {"name": "nacl/secretbox", "nonce": ""},
                    "ciphertext": "",
                }
            ),
            "out of cosign's range",
        ),
        (
            _envelope_pem(
                {
                    "kdf": {"name": "pbkdf2", "params": {"N": 2, "r": 8, "p": 1}, "salt": ""},
                    "cipher": {"name": "nacl/secretbox", "nonce": ""},
                    "ciphertext": "",
                }
            ),
            "scrypt and nacl/secretbox",
        ),
    ],
)
def test_hostile_key_files_fail_clearly(data: bytes, message: str) -> None:
    with pytest.raises(SigningKeyError, match=message):
        keys.decrypt(data, b"hello")


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    private, public = api.keygen(tmp_path / "cosign", b"pw")
    assert private.stat().st_mode & 0o777 == 0o600
    assert keys.decrypt(private.read_bytes(), b"pw").public.pem() == public.read_bytes()
    with pytest.raises(SigningKeyError, match="never overwrites"):
        api.keygen(tmp_path / "cosign", b"pw")


def test_keygen_into_a_missing_folder_says_so(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="no folder"):
        api.keygen(tmp_path / "absent" / "cosign", b"pw")
    assert not (tmp_path / "absent").exists()


def test_the_private_key_is_never_readable_by_others_even_while_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int] = []
    real_replace = Path.replace

    def spy(self: Path, target: Path) -> Path:  # the temporary file, just before its rename
        modes.append(self.stat().st_mode & 0o777)
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    api.keygen(tmp_path / "cosign", b"pw")
    assert modes[0] == 0o600
