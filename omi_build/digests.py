"""Canonical JSON and sha256 digests: the bytes every digest of omi-build's is taken over.

Sorted keys, no spaces, UTF-8 escaped as JSON does by default: the same value gives the same
bytes on any machine, so lock inputs, layer cache keys and OCI documents are reproducible.

>>> digest_of(canonical({"b": 1, "a": [1, 2]}))[:15]
'sha256:94a786c3'
"""

from __future__ import annotations

import hashlib
import json
from typing import IO, Any

_CHUNK = 1 << 20


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_stream(stream: IO[bytes]) -> str:
    """The hex sha256 of what `stream` holds, read in 1 MiB chunks: bounded memory at any size."""
    hasher = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()


def digest_of(data: bytes) -> str:
    """'sha256:<hex>', as OCI descriptors and omi.lock write digests."""
    return "sha256:" + hashlib.sha256(data).hexdigest()
