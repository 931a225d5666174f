"""The shared build cache in a registry (`--cache-repo REF`).

One entry per built layer: an OCI image manifest tagged `layer-<key>` (the key: the digest of
the layer's inputs, the same on every runner), whose one layer is the built layer's blob under
its own layer media type, whose config is the empty descriptor, and whose annotation
`dev.omi-build.layer.record` holds the record the local cache keeps (blob, inventory, facts).
Standard media types only, so any registry stores it (registries refuse the custom ones some
build caches use, buildkit#1143). Each entry is its own tag, written once and never read-
modified-written, so any number of runners can write one cache repo at once: the worst case
is the same entry written twice with the same bytes (layers are reproducible).

A runner that finds an entry downloads the blob (digest-checked) into its store and writes the
record locally; one that builds a layer the repo lacks pushes it. Transient failures of the
cache repo never fail a build: the layer is built locally and the failure is reported.
"""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

from omi_build.digests import canonical, digest_of
from omi_build.errors import RegistryError
from omi_build.progress import Progress, Silent
from omi_build.store import Store

from ._client import MANIFEST_TYPE, Client
from ._reference import Reference

RECORD_ANNOTATION = "dev.omi-build.layer.record"
ARTIFACT_TYPE = "application/vnd.dev.omi-build.layer.v1"
_EMPTY = b"{}"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


def tag_of(key: str) -> str:
    return f"layer-{key}"


class RemoteLayers:
    """A cache repo: `fetch` a layer's record (and its blob into the store), `publish` one."""

    def __init__(
        self, client: Client, reference: Reference, store: Store, progress: Progress | None = None
    ) -> None:
        self.client = client
        self.repository = reference.repository
        self.name = reference.name
        self.store = store
        self.progress = progress or Silent()
        self.pulled = 0
        self.pushed = 0
        self.failures: list[str] = []
        self._present: set[str] = set()  # keys the repo is known to hold: publish asks nothing
        self._lock = threading.Lock()
        # Up front, so that a wrong address or wrong credentials fail the build at once.
        client.upload_blob(self.repository, digest_of(_EMPTY), len(_EMPTY), lambda: io.BytesIO(_EMPTY))

    def _failed(self, what: str, exc: RegistryError) -> None:
        with self._lock:
            self.failures.append(f"{what}: {exc}")
        self.progress.step(f"cache repo {self.name}: {what} failed ({exc}); building locally")

    def fetch(self, key: str) -> str | None:
        """The record of the layer built for `key`, its blob now in the store; None if absent."""
        try:
            found = self.client.get_manifest(self.repository, tag_of(key))
            if found is None:
                return None
            manifest = found.json()
            record = str(manifest["annotations"][RECORD_ANNOTATION])
            blob = json.loads(record)["blob"]
            layer = manifest["layers"][0]
            if layer["digest"] != blob["digest"] or not _DIGEST.fullmatch(str(blob["digest"])):
                return None  # not an entry this tool wrote (its digest names a file here)
            if not self.store.has(blob["digest"]):
                self.store.blobs.mkdir(parents=True, exist_ok=True)
                self.client.download_blob(
                    self.repository,
                    blob["digest"],
                    self.store.path_for(blob["digest"]),
                    size=int(layer["size"]),
                    what=f"cached layer {blob['digest'][7:19]}",
                )
        except RegistryError as exc:
            self._failed(f"reading {tag_of(key)[:18]}", exc)
            return None
        except (KeyError, TypeError, ValueError, IndexError):
            return None  # a damaged or foreign entry: built locally, and written anew
        with self._lock:
            self.pulled += 1
            self._present.add(key)
        return record

    def publish(self, key: str, record: str) -> None:
        """Push the layer `record` names (its blob from the store) unless the repo has it."""
        if key in self._present:
            return
        try:
            if self.client.manifest_digest(self.repository, tag_of(key)) is not None:
                with self._lock:
                    self._present.add(key)
                return
            blob: dict[str, Any] = json.loads(record)["blob"]
            path = self.store.path_for(blob["digest"])
            self.client.upload_blob(
                self.repository, blob["digest"], int(blob["size"]), lambda: path.open("rb"),
                what=f"layer {blob['digest'][7:19]}",
            )  # fmt: skip
            manifest = {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": _EMPTY_TYPE, "digest": digest_of(_EMPTY), "size": len(_EMPTY)},
                "layers": [
                    {"mediaType": blob["media_type"], "digest": blob["digest"], "size": int(blob["size"])}
                ],
                "annotations": {RECORD_ANNOTATION: record},
            }
            self.client.put_manifest(self.repository, tag_of(key), canonical(manifest), MANIFEST_TYPE)
        except RegistryError as exc:
            self._failed(f"writing {tag_of(key)[:18]}", exc)
            return
        with self._lock:
            self.pushed += 1
            self._present.add(key)
