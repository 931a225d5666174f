"""OCI registries: references, credentials, the distribution API, and referrers with their
fallback index for registries that lack the referrers API.

Referrers (OCI 1.1): a registry with the API indexes every manifest pushed with a `subject`
itself and says so (`OCI-Subject` on the PUT). Elsewhere (Debian's docker-registry 2.8, older
ones) the client keeps the index under the tag `sha256-<hex>` of the subject's digest. There is
no compare-and-swap in the distribution API, so writers race: each reads the index, merges its
descriptors in, writes it, reads it back, and once its entries are there reads again after a
random pause long enough for a concurrent writer's read-modify-write to land; any entry lost
meanwhile is merged and written again.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from omi_build.digests import canonical
from omi_build.errors import RegistryError

from ._auth import Credentials, auth_files, credentials
from ._client import (
    CHUNK_BYTES,
    INDEX_TYPE,
    MANIFEST_TYPE,
    Client,
    Manifest,
)
from ._reference import Reference, looks_like_reference

__all__ = [
    "CHUNK_BYTES",
    "INDEX_TYPE",
    "MANIFEST_TYPE",
    "Client",
    "Credentials",
    "Manifest",
    "Reference",
    "add_referrers",
    "auth_files",
    "checked_digest",
    "credentials",
    "fallback_tag",
    "list_referrers",
    "looks_like_reference",
]

_FALLBACK_ROUNDS = 12
_SETTLE_S = (0.15, 0.35)  # the pause before the confirming read: longer than a writer's round trip


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def checked_digest(value: object, *, what: str) -> str:
    """A digest a registry gave, refused unless it is sha256:<64 hex> (it names files here)."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        msg = f"the registry gave {what} a malformed digest {str(value)[:80]!r}"
        raise RegistryError(msg, hint="the registry or what was pushed to it is broken or hostile")
    return value


def fallback_tag(digest: str) -> str:
    """The referrers fallback tag of a manifest: 'sha256-<hex>' (OCI distribution spec 1.1)."""
    algorithm, _, hexadecimal = digest.partition(":")
    return f"{algorithm}-{hexadecimal}"


def _fallback(client: Client, repository: str, digest: str) -> list[dict[str, Any]]:
    found = client.get_manifest(repository, fallback_tag(digest))
    if found is None:
        return []
    manifests = found.json().get("manifests") or []
    return [m for m in manifests if isinstance(m, dict) and "digest" in m]


def list_referrers(client: Client, repository: str, digest: str) -> list[dict[str, Any]]:
    """The descriptors of the manifests whose subject is `digest`: from the referrers API where
    the registry has one, else from the fallback index."""
    found = client.referrers(repository, digest)
    return found if found is not None else _fallback(client, repository, digest)


def add_referrers(client: Client, repository: str, subject: str, descriptors: list[dict[str, Any]]) -> None:
    """List `descriptors` (manifests already pushed, whose subject is `subject`) in the
    subject's fallback index, kept correct against concurrent writers (see the module's doc)."""
    confirmed = False
    for _ in range(_FALLBACK_ROUNDS):
        listed = _fallback(client, repository, subject)
        present = {entry["digest"] for entry in listed}
        missing = [d for d in descriptors if d["digest"] not in present]
        if not missing:
            if confirmed:
                return
            confirmed = True
            time.sleep(random.uniform(*_SETTLE_S))  # noqa: S311 - jitter
            continue
        confirmed = False
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [*listed, *missing]}
        client.put_manifest(repository, fallback_tag(subject), canonical(index), INDEX_TYPE)
        time.sleep(random.uniform(0, 0.05))  # noqa: S311 - let a concurrent write land first
    msg = (
        f"the referrers index {fallback_tag(subject)} in {client.registry}/{repository} kept losing "
        f"entries to concurrent writers ({_FALLBACK_ROUNDS} rounds)"
    )
    raise RegistryError(msg, hint="push again: what is already there is kept")
