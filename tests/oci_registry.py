"""A small in-process OCI registry for the tests, on 127.0.0.1.

It exists because no registry that installs here (Debian's docker-registry 2.8 answers 404)
serves the OCI 1.1 referrers API: this one does when `referrers_api` is set, so the client's
API path is tested too. It also offers bearer-token auth (its own token service), refuses a
manifest naming a blob it lacks (as distribution does), and can drop connections to test
failures. Everything is kept in memory; every request is bounded in size.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests|tags|referrers)(?:/(?P<rest>.*))?$"
)
_MAX_BODY = 64 << 20
INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass
class State:
    referrers_api: bool = False
    auth: str = ""  # "", "basic" or "bearer"
    user: str = "omi"
    password: str = "secret"  # noqa: S105 - a test registry's
    blobs: dict[str, bytes] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # repository -> blob digests
    manifests: dict[str, dict[str, tuple[bytes, str]]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    drop_puts_after: int | None = None  # close the connection mid-upload after this many PUT/PATCH
    busy: int = 0  # answer this many of the next requests 503 (a registry under load)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *_: Any) -> None:
        pass

    # -- helpers -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"errors": [{"code": code, "message": message}]}).encode(), headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        state = self.server.state
        given = self.headers.get("Authorization") or ""
        if state.auth == "basic":
            expected = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
            if given == f"Basic {expected}":
                return True
            self._error(
                401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": 'Basic realm="test"'}
            )
            return False
        if state.auth == "bearer":
            if given.startswith("Bearer ") and given[7:] in state.tokens:
                return True
            realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
            self._error(
                401, "UNAUTHORIZED", "authentication required",
                {"WWW-Authenticate": f'Bearer realm="{realm}",service="test"'},
            )  # fmt: skip
            return False
        return True

    def _token(self) -> None:
        state = self.server.state
        expected = base64.b64encode(f"{state.user}:{state.password}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self._error(401, "UNAUTHORIZED", "bad credentials")
            return
        token = secrets.token_hex(8)
        state.tokens.add(token)
        self._send(200, json.dumps({"token": token}).encode(), {"Content-Type": "application/json"})

    # -- routes --------------------------------------------------------------------------
    def _route(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        with state.lock:
            state.requests.append((self.command, parts.path))
        if parts.path == "/token":
            self._token()
            return
        with state.lock:
            busy, state.busy = state.busy > 0, max(0, state.busy - 1)
        if busy:
            self._body()
            self._error(503, "UNAVAILABLE", "busy", {"Retry-After": "0"})
            return
        if not self._authorized():
            self._body()
            return
        if parts.path == "/v2/":
            self._send(200, b"{}")
            return
        match = _ROUTE.match(parts.path)
        if match is None:
            self._error(404, "NOT_FOUND", "no such route")
            return
        name, kind, rest = match["name"], match["kind"], match["rest"] or ""
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        getattr(self, "_" + kind.replace("/", "_"))(name, rest, query)

    def _blobs(self, name: str, digest: str, _query: dict[str, str]) -> None:
        state = self.server.state
        if digest not in state.members.get(name, set()):
            self._error(404, "BLOB_UNKNOWN", digest)
            return
        data = state.blobs[digest]
        self._send(200, data, {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"})

    def _blobs_uploads(self, name: str, rest: str, query: dict[str, str]) -> None:
        state = self.server.state
        if self.command == "POST":
            self._body()
            mount, source = query.get("mount"), query.get("from")
            if mount and source and mount in state.members.get(source, set()):
                state.members.setdefault(name, set()).add(mount)
                self._send(
                    201, headers={"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount}
                )
                return
            upload = uuid.uuid4().hex
            state.uploads[upload] = bytearray()
            self._send(202, headers={"Location": f"/v2/{name}/blobs/uploads/{upload}", "Range": "0-0"})
            return
        if rest not in state.uploads:
            self._body()
            self._error(404, "BLOB_UPLOAD_UNKNOWN", rest)
            return
        if self.command == "DELETE":
            del state.uploads[rest]
            self._send(204)
            return
        with state.lock:
            if state.drop_puts_after is not None:
                state.drop_puts_after -= 1
                if state.drop_puts_after < 0:
                    state.drop_puts_after = None
                    self.close_connection = True
                    self.connection.close()  # a registry that dies mid-upload
                    return
        state.uploads[rest] += self._body()
        if self.command == "PATCH":
            size = len(state.uploads[rest])
            self._send(
                202, headers={"Location": f"/v2/{name}/blobs/uploads/{rest}", "Range": f"0-{size - 1}"}
            )
            return
        data = bytes(state.uploads.pop(rest))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest != query.get("digest"):
            self._error(400, "DIGEST_INVALID", f"got {digest}")
            return
        state.blobs[digest] = data
        state.members.setdefault(name, set()).add(digest)
        self._send(201, headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})

    def _manifests(self, name: str, reference: str, _query: dict[str, str]) -> None:
        state = self.server.state
        stored = state.manifests.setdefault(name, {})
        if self.command in {"GET", "HEAD"}:
            digest = (
                reference if reference.startswith("sha256:") else state.tags.get(name, {}).get(reference, "")
            )
            if digest not in stored:
                self._error(404, "MANIFEST_UNKNOWN", reference)
                return
            data, media_type = stored[digest]
            self._send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest})
            return
        data = self._body()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        raw = json.loads(data)
        needed = ([raw["config"]] if "config" in raw else []) + raw.get("layers", [])
        if any(d["digest"] not in state.members.get(name, set()) for d in needed):
            self._error(400, "MANIFEST_BLOB_UNKNOWN", "a blob it names is missing")
            return
        if any(
            m["digest"] not in stored for m in raw.get("manifests", []) if not reference.startswith("sha256-")
        ):
            self._error(400, "MANIFEST_UNKNOWN", "a manifest it names is missing")
            return
        with state.lock:
            stored[digest] = (data, self.headers.get("Content-Type") or raw.get("mediaType", ""))
            if not reference.startswith("sha256:"):
                state.tags.setdefault(name, {})[reference] = digest
        headers = {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"}
        if state.referrers_api and "subject" in raw:
            headers["OCI-Subject"] = raw["subject"]["digest"]
        self._send(201, headers=headers)

    def _tags(self, name: str, _rest: str, _query: dict[str, str]) -> None:
        tags = sorted(self.server.state.tags.get(name, {}))
        self._send(
            200, json.dumps({"name": name, "tags": tags}).encode(), {"Content-Type": "application/json"}
        )

    def _referrers(self, name: str, digest: str, _query: dict[str, str]) -> None:
        state = self.server.state
        if not state.referrers_api:
            self._error(404, "NOT_FOUND", "no referrers API")
            return
        found = []
        for manifest_digest, (data, media_type) in state.manifests.get(name, {}).items():
            raw = json.loads(data)
            if raw.get("subject", {}).get("digest") == digest:
                entry = {"mediaType": media_type, "digest": manifest_digest, "size": len(data)}
                entry["artifactType"] = raw.get("artifactType") or raw["config"]["mediaType"]
                if raw.get("annotations"):
                    entry["annotations"] = raw["annotations"]
                found.append(entry)
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": found}).encode()
        self._send(200, body, {"Content-Type": INDEX})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _route  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: State


@contextmanager
def serve(**options: Any) -> Iterator[tuple[str, State]]:
    """A registry on a free 127.0.0.1 port: ('127.0.0.1:PORT', its state)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = State(**options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
