"""An OCI distribution client: blobs, manifests, tags and referrers, with the registry's auth.

Our own, not skopeo's: skopeo copies an image but not its referrers, cannot keep a fallback
referrers index, mount blobs across repositories on demand, or serve as the build cache's
transport. Plain `http.client`, one kept-alive connection per thread and origin.

Scheme: HTTPS, verified against the host's CA store. A registry on a loopback address that does
not answer TLS is spoken to in plain HTTP, as docker and go-containerregistry do; any other needs
`insecure=True` (`--insecure-registry`), which also accepts a certificate that does not verify.

Auth: the registry's challenge on `GET /v2/` decides: Basic sends the credentials; Bearer
trades them (or nothing, for anonymous pulls) at the token service for a token per scope.
Transient failures (connection errors, 408, 429, 5xx) are retried with exponential backoff.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import random
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any, Self

from omi_build import atomic, settings
from omi_build.errors import RegistryConnectionError, RegistryError
from omi_build.progress import Progress, Silent

from ._auth import Credentials, credentials
from ._reference import Reference

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = f"{INDEX_TYPE}, {MANIFEST_TYPE}, {DOCKER_LIST_TYPE}, {DOCKER_MANIFEST_TYPE}"
MAX_MANIFEST_BYTES = 4 << 20  # what distribution itself accepts: a bigger one is refused, not read
CHUNK_BYTES = 8 << 20  # blobs above this go up in PATCHes of this size (with progress)
_READ = 1 << 20
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    status: int
    headers: Message
    data: bytes

    def header(self, name: str) -> str:
        return str(self.headers.get(name) or "")

    def errors(self) -> str:
        """The registry's error codes and messages, as it wrote them."""
        try:
            raw = json.loads(self.data)
            found = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in raw["errors"]]
        except (ValueError, KeyError, TypeError, AttributeError):
            return self.data[:200].decode("utf-8", "replace").strip()
        return "; ".join(found)


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    data: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.data)
        return loaded


class _Retry(Exception):  # noqa: N818 - control flow inside one upload
    pass


Body = bytes | Callable[[], IO[bytes]] | None


class Client:
    """One registry (host[:port]); every call names its repository."""

    def __init__(
        self,
        reference: Reference,
        *,
        insecure: bool = False,
        progress: Progress | None = None,
        auth: Credentials | None = None,
    ) -> None:
        self.registry = reference.registry
        self.api = reference.api
        self.loopback = reference.loopback
        self.insecure = insecure
        self.progress = progress or Silent()
        self._auth = auth
        self._auth_read: set[str] = set()
        self._scheme: str | None = None
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._every: list[http.client.HTTPConnection] = []
        self._pool_lock = threading.Lock()

    # -- transport ------------------------------------------------------------------------
    def _tls(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return settings.ssl_context()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        found = pool.get((scheme, netloc))
        if found is None:
            timeout = settings.network_timeout_s()
            if scheme == "https":
                found = http.client.HTTPSConnection(
                    netloc, timeout=timeout, context=self._tls(), blocksize=_READ
                )
            else:
                found = http.client.HTTPConnection(netloc, timeout=timeout, blocksize=_READ)
            pool[(scheme, netloc)] = found
            with self._pool_lock:
                self._every.append(found)
        return found

    def _drop(self, scheme: str, netloc: str) -> None:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.get("pool", {})
        if (connection := pool.pop((scheme, netloc), None)) is not None:
            connection.close()

    def close(self) -> None:
        """Close every connection, whichever thread opened it."""
        with self._pool_lock:
            every, self._every = self._every, []
        for connection in every:
            connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _exchange(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Body,
        sink: Callable[[http.client.HTTPResponse], None] | None,
    ) -> Reply:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection = self._connection(parts.scheme, parts.netloc)
        payload: Any = body() if callable(body) else body
        try:
            connection.request(method, target, body=payload, headers={"User-Agent": "omi-build", **headers})
            response = connection.getresponse()
            if sink is not None and response.status == 200:
                sink(response)
                data = b""
            else:
                data = response.read(MAX_MANIFEST_BYTES + 1)
                if not response.isclosed():  # too big to be an answer: not kept, not reused
                    self._drop(parts.scheme, parts.netloc)
                    return Reply(status=response.status, headers=response.headers, data=data)
            if response.will_close:
                self._drop(parts.scheme, parts.netloc)
            return Reply(status=response.status, headers=response.headers, data=data)
        except BaseException:
            self._drop(parts.scheme, parts.netloc)
            raise
        finally:
            if hasattr(payload, "close"):
                payload.close()

    # -- scheme, ping and auth ---------------------------------------------------------------
    def base(self) -> str:
        """The registry's base URL, deciding the scheme (and reading the auth challenge) once."""
        with self._lock:
            if self._scheme is None:
                self._scheme = self._ping()
        return f"{self._scheme}://{self.api}"

    def _ping(self) -> str:
        failure: BaseException | None = None
        for scheme in ("https", "http"):
            try:
                reply = self._ping_once(scheme)
            except (
                ssl.SSLError,
                ConnectionResetError,
                http.client.RemoteDisconnected,
                http.client.BadStatusLine,
            ) as exc:
                failure = exc  # no TLS there: plain HTTP, where allowed
                if not (self.loopback or self.insecure):
                    msg = f"{self.registry} does not answer TLS ({exc.__class__.__name__}: {exc})"
                    raise RegistryError(
                        msg,
                        hint="if it is a plain-HTTP registry you trust, pass "
                        f"--insecure-registry {self.registry}",
                    ) from exc
                continue
            except (OSError, http.client.HTTPException) as exc:
                msg = f"cannot reach the registry {self.registry}: {_reason(exc)}"
                raise RegistryError(
                    msg, hint="check the address and port, and that the registry runs"
                ) from exc
            if reply.status == 401:
                self._challenge = _parse_challenge(reply.header("WWW-Authenticate"))
            elif reply.status != 200:
                if reply.status in _TRANSIENT:
                    tries = settings.network_attempts()
                    msg = f"{self.registry} is unavailable: GET /v2/ answered {_status(reply)}, {tries} times"
                    raise RegistryError(msg, hint="the registry is busy or down; run the command again later")
                msg = f"{self.registry} is not an OCI registry: GET /v2/ answered HTTP {reply.status}"
                raise RegistryError(msg, hint="check the address: host[:port] of the registry")
            return scheme
        msg = f"cannot speak to {self.registry} over HTTPS or HTTP: {failure}"
        raise RegistryError(msg)

    def _ping_once(self, scheme: str) -> Reply:
        """GET /v2/, with a busy registry's 408, 429 and 5xx retried like any request."""
        attempts = settings.network_attempts()
        for attempt in range(1, attempts + 1):
            reply = self._exchange("GET", f"{scheme}://{self.api}/v2/", {}, None, None)
            if reply.status not in _TRANSIENT or attempt == attempts:
                return reply
            _backoff(attempt, reply.header("Retry-After"))
        raise AssertionError  # pragma: no cover - the loop returns

    def _credentials(self, repository: str) -> Credentials | None:
        if self._auth is None and repository not in self._auth_read:
            self._auth = credentials(self.registry, repository)
            self._auth_read.add(repository)
        return self._auth

    def _authorization(self, repository: str, scope: str) -> str | None:
        if self._challenge is None:
            return None
        kind, params = self._challenge
        creds = self._credentials(repository)
        if kind == "basic":
            if creds is None or not creds.username:
                return None
            return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        with self._lock:
            token = self._tokens.get(scope)
        if token is None:
            token = self._token(params, scope, creds)
            with self._lock:
                self._tokens[scope] = token
        return f"Bearer {token}"

    def _token(self, params: dict[str, str], scope: str, creds: Credentials | None) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            msg = f"{self.registry} asks for a token from '{realm}', which is not a URL"
            raise RegistryError(msg)
        query = {"service": params.get("service", ""), "scope": scope}
        headers = {"User-Agent": "omi-build"}
        data = None
        if creds is not None and creds.identity_token:
            data = urllib.parse.urlencode(
                {
                    **query,
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "omi-build",
                }
            ).encode()
            request = urllib.request.Request(realm, data=data, headers=headers, method="POST")  # noqa: S310
        else:
            if creds is not None and creds.username:
                headers["Authorization"] = (
                    "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
                )
            request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}", headers=headers)  # noqa: S310
        context = self._tls() if realm.startswith("https://") else None
        try:
            with urllib.request.urlopen(  # noqa: S310 - realm checked to be http(s) above
                request, timeout=settings.network_timeout_s(), context=context
            ) as answer:
                raw = json.loads(answer.read(1 << 20))
        except urllib.error.HTTPError as exc:
            raise self._refused(exc.code, creds, f"the token service {realm}") from exc
        except (OSError, ValueError) as exc:
            msg = f"cannot get a token for {self.registry} from {realm}: {_reason(exc)}"
            raise RegistryError(msg) from exc
        token = raw.get("token") or raw.get("access_token") if isinstance(raw, dict) else None
        if not token:
            msg = f"the token service {realm} answered without a token"
            raise RegistryError(msg)
        return str(token)

    def _refused(self, status: int, creds: Credentials | None, who: str) -> RegistryError:
        if creds is None or not (creds.username or creds.identity_token):
            msg = f"{who} needs credentials for {self.registry} (HTTP {status})"
            return RegistryError(
                msg,
                hint="log in with docker login, podman login or skopeo login, or set REGISTRY_AUTH_FILE, "
                "or OMI_REGISTRY_USERNAME and OMI_REGISTRY_PASSWORD",
            )
        msg = f"{who} refused the credentials for {self.registry} from {creds.source} (HTTP {status})"
        return RegistryError(msg, hint="check the user name and password (log in again)")

    # -- one request -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        repository: str,
        push: bool = False,
        headers: dict[str, str] | None = None,
        body: Body = None,
        sink: Callable[[http.client.HTTPResponse], None] | None = None,
        retry: bool = True,
    ) -> Reply:
        """One request to `path` (or an absolute URL the registry gave), authorized for the
        repository's pull (and push) scope. Returns every status but 401 to the caller."""
        base = self.base()
        url = path if path.startswith(("http://", "https://")) else base + path
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        attempts = settings.network_attempts() if retry else 1
        renewed = False  # a refused token or missing credentials are asked for once more
        attempt = 0
        while True:
            attempt += 1
            sent = dict(headers or {})
            if (authorization := self._authorization(repository, scope)) is not None:
                sent["Authorization"] = authorization
            try:
                reply = self._exchange(method, url, sent, body, sink)
            except (OSError, http.client.HTTPException) as exc:
                if attempt >= attempts or isinstance(exc, ssl.SSLCertVerificationError):
                    msg = f"{method} {url} failed: {_reason(exc)}"
                    raise RegistryConnectionError(
                        msg, hint="the registry dropped the connection; run the command again"
                    ) from exc
                _backoff(attempt)
                continue
            if reply.status == 401:
                if not renewed:
                    renewed = True
                    attempt -= 1
                    with self._lock:
                        self._challenge = _parse_challenge(reply.header("WWW-Authenticate"))
                        self._tokens.pop(scope, None)
                    if self._authorization(repository, scope) is not None:
                        continue
                raise self._refused(401, self._credentials(repository), self.registry)
            if reply.status == 403:
                msg = f"{self.registry} denied {method} on {repository}: {reply.errors() or 'HTTP 403'}"
                raise RegistryError(
                    msg, hint=f"the credentials may not {'push to' if push else 'pull from'} {repository}"
                )
            if reply.status in _TRANSIENT and attempt < attempts:
                _backoff(attempt, reply.header("Retry-After"))
                continue
            return reply

    # -- blobs -------------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str) -> bool:
        reply = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository=repository, push=True)
        return reply.status == 200

    def download_blob(
        self, repository: str, digest: str, destination: Path, *, size: int | None = None, what: str = ""
    ) -> None:
        """The blob, streamed to `destination` (renamed into place only once its sha256 matched)."""
        label = what or digest[:19]
        expected = digest.removeprefix("sha256:")
        for attempt in range(1, settings.network_attempts() + 1):
            temporary = atomic.temporary_beside(destination)
            try:
                with temporary.open("wb") as out:
                    hasher = hashlib.sha256()

                    def sink(response: Any, out: IO[bytes] = out, hasher: Any = hasher) -> None:
                        done = 0
                        while chunk := response.read(_READ):
                            out.write(chunk)
                            hasher.update(chunk)
                            done += len(chunk)
                            self.progress.transfer(label, done, size)

                    self._get_blob(repository, digest, sink)
                if hasher.hexdigest() != expected:
                    msg = (
                        f"the blob {digest} from {self.registry}/{repository} has sha256 {hasher.hexdigest()}"
                    )
                    raise RegistryError(msg, hint="the registry served damaged or different bytes")
                temporary.replace(destination)
            except (OSError, http.client.HTTPException) as exc:
                if attempt == settings.network_attempts():
                    msg = f"downloading {label} from {self.registry} broke off: {_reason(exc)}"
                    raise RegistryError(msg, hint="run the command again") from exc
                _backoff(attempt)
            else:
                return
            finally:
                temporary.unlink(missing_ok=True)

    def _get_blob(self, repository: str, digest: str, sink: Callable[[Any], None]) -> None:
        """GET a blob into `sink`, following the registry to its storage (S3, GCS)."""
        reply = self.request("GET", f"/v2/{repository}/blobs/{digest}", repository=repository, sink=sink)
        moved_to = reply.header("Location")
        if reply.status in {301, 302, 303, 307, 308} and moved_to.startswith(("https://", "http://")):
            # storage behind the registry (S3, GCS): fetched without the registry's token
            with urllib.request.urlopen(  # noqa: S310 - http(s) checked
                moved_to, timeout=settings.network_timeout_s()
            ) as moved:
                sink(moved)
        elif reply.status == 404:
            msg = f"{self.registry}/{repository} lacks the blob {digest}"
            raise RegistryError(msg, hint="push the image again")
        elif reply.status != 200:
            msg = f"GET blob {digest} from {self.registry}/{repository}: {_status(reply)}"
            raise RegistryError(msg)

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        opener: Callable[[], IO[bytes]],
        *,
        mount_from: tuple[str, ...] = (),
        what: str = "",
    ) -> str:
        """Put a blob unless the repository has it; return 'exists', 'mounted' or 'uploaded'.

        A repository of the same registry that holds it is asked to mount it (no bytes move).
        A blob above CHUNK_BYTES goes up in chunks; an upload that breaks starts again."""
        if self.has_blob(repository, digest):
            return "exists"
        for source in mount_from:
            if source == repository:
                continue
            query = urllib.parse.urlencode({"mount": digest, "from": source})
            reply = self.request(
                "POST", f"/v2/{repository}/blobs/uploads/?{query}", repository=repository, push=True
            )
            if reply.status == 201:
                return "mounted"
            if reply.status == 202:  # not mounted: the registry opened an upload instead; cancel it
                with contextlib.suppress(RegistryError):
                    self.request(
                        "DELETE", reply.header("Location"), repository=repository, push=True, retry=False
                    )
        label = what or digest[:19]
        attempts = settings.network_attempts()
        for attempt in range(1, attempts + 1):
            try:
                self._upload(repository, digest, size, opener, label)
            except _Retry as exc:
                if attempt == attempts:
                    msg = f"uploading {label} to {self.registry}/{repository} failed {attempts} times: {exc}"
                    raise RegistryError(
                        msg, hint="the registry dropped the connection; run the command again"
                    ) from exc
                _backoff(attempt)
            else:
                return "uploaded"
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _upload(
        self, repository: str, digest: str, size: int, opener: Callable[[], IO[bytes]], label: str
    ) -> None:
        try:
            start = self.request("POST", f"/v2/{repository}/blobs/uploads/", repository=repository, push=True)
            if start.status != 202:
                msg = f"{self.registry} refused to start an upload to {repository}: {_status(start)}"
                raise RegistryError(msg)
            location = start.header("Location")
            if size > CHUNK_BYTES:
                offset = 0
                while offset < size:
                    length = min(CHUNK_BYTES, size - offset)
                    reply = self.request(
                        "PATCH",
                        location,
                        repository=repository,
                        push=True,
                        retry=False,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(length),
                            "Content-Range": f"{offset}-{offset + length - 1}",
                        },
                        body=_piece(opener, offset, length),
                    )
                    if reply.status != 202:
                        said = f"PATCH answered {_status(reply)}"
                        raise _Retry(said)
                    location = reply.header("Location") or location
                    offset += length
                    self.progress.transfer(label, offset, size)
                body: Body = b""
                length = 0
            else:
                body, length = _piece(opener, 0, size), size
            separator = "&" if "?" in location else "?"
            reply = self.request(
                "PUT",
                f"{location}{separator}digest={urllib.parse.quote(digest)}",
                repository=repository,
                push=True,
                retry=False,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                body=body,
            )
        except RegistryConnectionError as exc:
            raise _Retry(str(exc)) from exc
        if reply.status in _TRANSIENT:
            said = f"PUT answered {_status(reply)}"
            raise _Retry(said)
        if reply.status != 201:
            msg = f"{self.registry} refused the blob {digest} for {repository}: {_status(reply)}"
            raise RegistryError(msg)
        self.progress.transfer(label, size, size)

    # -- manifests and tags ------------------------------------------------------------------
    def get_manifest(self, repository: str, identifier: str) -> Manifest | None:
        """A manifest or index by tag or digest (checked against the digest), or None if absent."""
        reply = self.request(
            "GET",
            f"/v2/{repository}/manifests/{identifier}",
            repository=repository,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if reply.status == 404:
            return None
        if reply.status != 200:
            msg = f"GET manifest {identifier} from {self.registry}/{repository}: {_status(reply)}"
            raise RegistryError(msg)
        if len(reply.data) > MAX_MANIFEST_BYTES:
            limit = MAX_MANIFEST_BYTES >> 20
            msg = f"the manifest {identifier} in {self.registry}/{repository} is over {limit} MiB"
            raise RegistryError(
                msg, hint="no image manifest is that big: the registry is not serving a manifest"
            )
        digest = "sha256:" + hashlib.sha256(reply.data).hexdigest()
        if identifier.startswith("sha256:") and digest != identifier:
            msg = f"{self.registry}/{repository} served {digest} for the manifest {identifier}"
            raise RegistryError(msg, hint="the registry served different bytes than the digest names")
        media_type = reply.header("Content-Type").split(";")[0].strip()
        try:
            media_type = str(json.loads(reply.data).get("mediaType") or media_type)
        except (ValueError, AttributeError) as exc:
            msg = f"the manifest {identifier} in {self.registry}/{repository} is not JSON"
            raise RegistryError(msg) from exc
        return Manifest(data=reply.data, media_type=media_type, digest=digest)

    def manifest_digest(self, repository: str, identifier: str) -> str | None:
        """What a tag points at (HEAD, falling back to GET where the registry omits the digest)."""
        reply = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{identifier}",
            repository=repository,
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if reply.status == 404:
            return None
        if reply.status == 200 and (digest := reply.header("Docker-Content-Digest")):
            return digest
        found = self.get_manifest(repository, identifier)
        return found.digest if found is not None else None

    def put_manifest(self, repository: str, identifier: str, data: bytes, media_type: str) -> bool:
        """Put a manifest under a tag or its digest; True when the registry keeps referrers itself
        (it answered with OCI-Subject for a manifest that has a subject)."""
        reply = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{identifier}",
            repository=repository,
            push=True,
            headers={"Content-Type": media_type},
            body=data,
        )
        if reply.status not in {200, 201}:
            msg = f"{self.registry} refused the manifest {identifier} for {repository}: {_status(reply)}"
            raise RegistryError(msg, hint="the registry may lack a blob it names, or refuse its media type")
        return bool(reply.header("OCI-Subject"))

    def tags(self, repository: str) -> list[str]:
        """Every tag of the repository (following the Link header's pages)."""
        found: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n=1000"
        while path:
            reply = self.request("GET", path, repository=repository)
            if reply.status == 404:
                return found
            if reply.status != 200:
                msg = f"GET tags of {self.registry}/{repository}: HTTP {reply.status} {reply.errors()}"
                raise RegistryError(msg)
            found += list(json.loads(reply.data).get("tags") or [])
            link = re.match(r"<([^>]+)>", reply.header("Link"))
            path = link.group(1) if link else None
        return found

    def referrers(self, repository: str, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's answer for `digest`, or None where the registry has no such API."""
        reply = self.request(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            repository=repository,
            headers={"Accept": INDEX_TYPE},
        )
        if reply.status != 200 or not reply.header("Content-Type").startswith(INDEX_TYPE):
            return None
        manifests = json.loads(reply.data).get("manifests") or []
        return [m for m in manifests if isinstance(m, dict)]


def _status(reply: Reply) -> str:
    return f"HTTP {reply.status} {reply.errors()}".strip()


def _piece(opener: Callable[[], IO[bytes]], offset: int, length: int) -> Callable[[], IO[bytes]]:
    def open_piece() -> IO[bytes]:
        stream = opener()
        stream.seek(offset)
        return _Bounded(stream, length)  # type: ignore[return-value]

    return open_piece


class _Bounded:
    """At most `length` bytes of a stream, for http.client to send as one request body."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        self._stream = stream
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        data = self._stream.read(size)
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._stream.close()


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = header.strip().partition(" ")
    return kind.lower(), dict(_CHALLENGE.findall(rest))


def _backoff(attempt: int, retry_after: str = "") -> None:
    delay = min(_MAX_BACKOFF_S, 0.25 * 2**attempt)
    if retry_after.isdigit():
        delay = min(_MAX_BACKOFF_S, float(retry_after))
    time.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not a secret


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, socket.timeout | TimeoutError):
        return f"no answer within {settings.network_timeout_s():g} s"
    return str(reason) or type(reason).__name__
