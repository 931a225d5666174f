"""A content-addressed, digest-checked store of downloads and built blobs.

Layout: `<cache>/blobs/sha256/<hex>`. Every write goes to a temporary file in the same
directory and is renamed into place only after its digest matched, so a killed build never
leaves a partial or wrong entry; readers never see one. Two builds may share the store.

>>> store = Store(Path("/tmp/omi-cache"))
>>> path = store.put_bytes(b"hello")
>>> store.path_for(path.name) == path
True
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

from omi_build import atomic
from omi_build.digests import sha256_stream
from omi_build.errors import CacheError, FetchError
from omi_build.progress import Progress, Silent
from omi_build.settings import network_attempts, network_timeout_s, ssl_context

from ._stats import Signature, StatCache, signature

__all__ = [
    "FOLDERS", "Signature", "StatCache", "Store", "open_url", "sha256_file", "signature", "with_retries",
]  # fmt: skip

_CHUNK = 1 << 20
_ABANDONED_AFTER_S = 24 * 3600
_LOCAL_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def sha256_file(path: Path) -> str:
    with path.open("rb") as stream:
        return sha256_stream(stream)


@dataclass(frozen=True, kw_only=True, slots=True)
class Folder:
    """A folder of the cache: what it holds, and whether `cache clean --keep-downloads` keeps it."""

    name: str
    what: str
    derived: bool  # rebuilt on demand from the downloads; cleaned even with --keep-downloads


# Every folder a stage keeps in the cache, registered once: `Store.folder` hands out only
# these, and the sweep, `cache info` and `cache clean` read this table, so a new stage's
# folder is covered the day it is added here.
FOLDERS = {
    folder.name: folder
    for folder in (
        Folder(name="blobs/sha256", what="downloaded .debs and wheels, and built layers", derived=False),
        Folder(name="unpacked", what="each download unpacked, with its bytecode", derived=True),
        Folder(name="interpreters", what="the image's Python, run to compile bytecode", derived=True),
        Folder(name="layers", what="which layer blob each set of inputs built", derived=True),
        Folder(name="manifests", what="validated manifests", derived=True),
        Folder(name="locks", what="locks between builds sharing the cache", derived=False),
        Folder(
            name="stats",
            what="digests of files by their stat, so unchanged files are not read again",
            derived=True,
        ),
    )
}


class Store:
    """Blobs named by their sha256 under `root`, and the folders of `FOLDERS` beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = self.folder("blobs/sha256")
        # Blobs this process wrote or re-hashed: hashing them again would find nothing new.
        self._checked: set[str] = set()
        # Blobs checked by an earlier build and not touched since (a write moves their stat).
        self._stats = StatCache(self.folder("stats") / "blobs.json")
        self._scopes: dict[str, StatCache] = {}
        self._scopes_lock = threading.Lock()

    def folder(self, name: str) -> Path:
        """The path of a registered cache folder (KeyError for one not in FOLDERS)."""
        return self.root / FOLDERS[name].name

    def sweep(self) -> None:
        """Remove what killed builds left half-written: temporary files older than a day, so
        that none a running build still writes is touched."""
        cutoff = time.time() - _ABANDONED_AFTER_S
        for folder in FOLDERS:
            # a missing folder, or a stray file where a folder belongs, holds no leftovers
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                for leftover in self.folder(folder).iterdir():
                    if not atomic.is_temporary(leftover.name):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        if leftover.lstat().st_mtime < cutoff:
                            if leftover.is_dir() and not leftover.is_symlink():
                                shutil.rmtree(leftover, ignore_errors=True)
                            else:
                                leftover.unlink()

    def stats(self, scope: Path) -> StatCache:
        """The stat cache of the files under `scope` (a model package, an output layout)."""
        key = hashlib.sha256(os.fsencode(scope.resolve())).hexdigest()[:32]
        with self._scopes_lock:
            if key not in self._scopes:
                self._scopes[key] = StatCache(self.folder("stats") / f"{key}.json")
            return self._scopes[key]

    def path_for(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.path_for(digest).is_file()

    def verified(self, digest: str, *, what: str) -> Path:
        """The blob's path after re-hashing it; a corrupt entry is removed and reported."""
        path = self.path_for(digest)
        if _hex(digest) in self._checked and path.is_file():
            return path
        with path.open("rb") as stream:
            actual = self._stats.digest(_hex(digest), stream, sha256_stream)
        if actual != _hex(digest):
            self._stats.forget(_hex(digest))
            path.unlink(missing_ok=True)
            msg = f"cache entry for {what} is corrupt (sha256 {actual}, expected {_hex(digest)})"
            raise FetchError(msg, hint="it was removed; run the command again to download it anew")
        self._checked.add(actual)
        return path

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Held (shared) by every build while it runs, so the cache is not cleaned under it."""
        with self._whole(fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The cache to oneself, to clean it; CacheError at once while a build uses it."""
        try:
            with self._whole(fcntl.LOCK_EX | fcntl.LOCK_NB):
                yield
        except BlockingIOError as exc:
            msg = f"a build is using the cache at {self.root}"
            raise CacheError(msg, hint="run the command again when the build has ended") from exc

    @contextlib.contextmanager
    def _whole(self, mode: int) -> Iterator[None]:
        locks = self.folder("locks")
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / "cache.lock").open("a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock shared by every process using this store."""
        locks = self.folder("locks")
        locks.mkdir(parents=True, exist_ok=True)
        with (locks / f"{name}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def writer(
        self,
        expected: str | None = None,
        *,
        what: str = "a blob",
        durable: bool = True,
        remember: bool = False,
    ) -> Iterator[_Writer]:
        """Write a blob; on success it is renamed to its digest (checked against `expected`).

        `durable` syncs it to disk before the rename; a blob that is re-hashed whenever it is
        read can skip that. `remember` keeps it in the stat cache, for a blob that later builds
        check on every use (a layer), so they need not hash it again.
        """
        self.blobs.mkdir(parents=True, exist_ok=True)
        handle = atomic.temporary_beside(self.blobs / "blob").open("xb")
        writer = _Writer(handle)
        try:
            yield writer
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            handle.close()
            digest = writer.hasher.hexdigest()
            if expected is not None and digest != _hex(expected):
                msg = f"{what}: sha256 {digest} does not match the expected {_hex(expected)}"
                raise FetchError(
                    msg,
                    hint="the source changed or the download was tampered with; "
                    "if the change is intended, run 'omi-build lock' again",
                )
            final = self.path_for(digest)
            Path(handle.name).replace(final)  # the name it was opened by
            writer.digest = digest
            self._checked.add(digest)
            if remember:
                self._stats.trust_written(digest, final, digest)
        finally:
            handle.close()
            Path(handle.name).unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> Path:
        with self.writer() as out:
            out.write(data)
        return self.path_for(out.digest)

    def fetch(
        self,
        url: str,
        sha256: str,
        *,
        what: str,
        size: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """The blob for `url`, downloaded once and checked against `sha256`."""
        if self.has(sha256):
            return self.path_for(sha256)
        with self.lock(_hex(sha256)):
            if self.has(sha256):  # another build fetched it while we waited
                return self.path_for(sha256)
            _download(self, url, sha256, what=what, size=size, progress=progress or Silent())
        return self.path_for(sha256)


class _Writer:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.hasher = hashlib.sha256()
        self.size = 0
        self.digest = ""

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.hasher.update(data)
        self.size += len(data)

    def split(self) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
        """Its write as two calls, hashing and writing, for two threads to make in step (each
        in the same order): a gigabyte blob is hashed while it is written, not after."""

        def write_only(data: bytes) -> None:
            self.handle.write(data)
            self.size += len(data)

        return self.hasher.update, write_only


class _Pool:
    """Kept-alive HTTP connections per origin, shared by the download threads.

    A build fetches dozens of files from one mirror; opening a connection for each was measured
    here to stall one in ten for 5 s, while one reused connection fetched 68 packages in 1.5 s.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str], list[Any]] = {}
        self._lock = threading.Lock()

    def take(self, scheme: str, netloc: str) -> tuple[Any, bool]:
        """A connection to the origin, and whether it was kept alive from an earlier request."""
        import http.client  # noqa: PLC0415 - only downloads need it

        with self._lock:
            idle = self._idle.get((scheme, netloc))
            if idle:
                return idle.pop(), True
        timeout = network_timeout_s()  # per connect and per read: silence, not total time
        if scheme == "https":
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=ssl_context()), False
        return http.client.HTTPConnection(netloc, timeout=timeout), False

    def give_back(self, scheme: str, netloc: str, connection: Any) -> None:
        with self._lock:
            self._idle.setdefault((scheme, netloc), []).append(connection)


_POOL = _Pool()


class _Response:
    """A streamed response whose connection goes back to the pool once read to the end."""

    def __init__(self, response: Any, connection: Any, scheme: str, netloc: str) -> None:
        self._response = response
        self._connection = connection
        self._origin = (scheme, netloc)
        self.headers = response.headers

    def read(self, size: int = -1) -> bytes:
        import http.client  # noqa: PLC0415

        try:
            data: bytes = self._response.read(size) if size >= 0 else self._response.read()
        except http.client.HTTPException as exc:
            msg = f"connection broke during the download: {exc!r}"
            raise ConnectionError(msg) from exc
        return data

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        if self._response.isclosed() and not self._response.will_close:
            _POOL.give_back(*self._origin, self._connection)
        else:
            self._connection.close()


def _open_pooled(url: str, redirects: int = 5) -> _Response:
    import http.client  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    from urllib.parse import urljoin, urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    while True:
        connection, reused = _POOL.take(parts.scheme, parts.netloc)
        try:
            connection.request("GET", path, headers={"User-Agent": "omi-build"})
            response = connection.getresponse()
            break
        except (http.client.HTTPException, OSError) as exc:
            connection.close()
            # A kept-alive connection the server closed meanwhile: again on a new one. A new
            # connection that fails is the attempt's failure (with_retries decides on more).
            if not reused or isinstance(exc, TimeoutError):
                msg = str(exc) or type(exc).__name__
                raise ConnectionError(msg) from exc
    if response.status in {301, 302, 303, 307, 308} and redirects:
        location = response.getheader("Location") or ""
        response.read()
        _Response(response, connection, parts.scheme, parts.netloc).__exit__()
        return _open_pooled(urljoin(url, location), redirects - 1)
    if response.status >= 400:
        response.read()
        connection.close()
        raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, None)
    return _Response(response, connection, parts.scheme, parts.netloc)


def open_url(url: str) -> IO[bytes]:
    """A response stream for `url` (http, https or file), trusting the host's CA store.

    Plain connections are kept alive and reused; with a proxy configured in the environment
    (http_proxy, https_proxy), urllib goes through it instead.
    """
    import urllib.request  # noqa: PLC0415 - 30 ms of imports that cached builds never need

    scheme = url.split(":", 1)[0]
    if scheme not in {"http", "https", "file"}:
        msg = f"unsupported URL scheme in {url}"
        raise FetchError(msg)
    if scheme in {"http", "https"} and scheme not in urllib.request.getproxies():
        return _open_pooled(url)  # type: ignore[return-value]
    request = urllib.request.Request(url, headers={"User-Agent": "omi-build"})  # noqa: S310
    response: IO[bytes] = urllib.request.urlopen(  # noqa: S310 - checked above
        request, timeout=network_timeout_s(), context=ssl_context()
    )
    return response


def with_retries(what: str, url: str, action: Callable[[], None]) -> None:
    """Run a network action, retrying transient failures; raise FetchError naming `what`."""
    import urllib.error  # noqa: PLC0415

    attempts = network_attempts()
    for attempt in range(1, attempts + 1):
        try:
            action()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts:
                msg = f"{what}: {url} answered HTTP {exc.code} {exc.reason}"
                hint = (
                    "the file is gone from the mirror or index; run 'omi-build lock' to re-resolve"
                    if exc.code == 404
                    else None
                )
                raise FetchError(msg, hint=hint) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if exc.errno in _LOCAL_ERRORS:
                raise  # this machine's disk, not the network: no retry helps
            if attempt == attempts:
                reason = getattr(exc, "reason", exc)
                silent = isinstance(reason, TimeoutError) or "timed out" in str(reason)
                detail = (
                    f"it did not answer within {network_timeout_s():g} s, {attempts} times"
                    if silent
                    else f"{reason}"
                )
                msg = f"{what}: cannot download {url}: {detail}"
                raise FetchError(
                    msg,
                    hint="check the network and that the mirror or index is up; point "
                    "OMI_DEBIAN_MIRROR (Debian) or uv's index (wheels) at a reachable one, or give a "
                    "slow one longer with OMI_NETWORK_TIMEOUT (seconds of silence, now "
                    f"{network_timeout_s():g}) and OMI_NETWORK_ATTEMPTS",
                ) from exc
        else:
            return
        time.sleep(0.5 * attempt)


def _download(
    store: Store, url: str, sha256: str, *, what: str, size: int | None, progress: Progress
) -> None:
    def attempt() -> None:
        with store.writer(sha256, what=what) as out, open_url(url) as response:
            total = size or int(getattr(response, "headers", {}).get("Content-Length") or 0) or None
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                progress.transfer(what, out.size, total)

    with_retries(what, url, attempt)
