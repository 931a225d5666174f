"""Downloads a build needs, running in the background: the object the layer builder waits on.

A build asks for every locked file it lacks (`request`), then goes on: the unpacker takes each
file as it arrives (`arrivals`), a layer waits for the files it needs (`wait`), and a failed
build gives up on the rest (`cancel`) so no thread waits for a download that will not come.
A `deferred` request starts only when something waits for it: the host's Python, needed to
compile bytecode for another platform only when a layer is built at all.

>>> from omi_build.store import Store
>>> with Downloads(Store(Path("/tmp/omi-cache"))) as downloads:
...     downloads.request([])
...     downloads.ready("0" * 64)
False
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from omi_build.errors import BuildError
from omi_build.progress import Progress, Silent
from omi_build.store import Store

_WORKERS = 8  # connections at once: enough to fill a link, few enough for a mirror's limits


@dataclass(frozen=True, kw_only=True, slots=True)
class Source:
    """One file to download: where it is, and what it must hash to."""

    sha256: str
    size: int
    what: str
    url: str


class Downloads:
    """Files on their way into a store; use it as a context manager (it owns the threads)."""

    def __init__(self, store: Store, progress: Progress | None = None) -> None:
        self.store = store
        self.progress = progress or Silent()
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="download")
        self._changed = threading.Condition()
        self._running: dict[str, Future[Path]] = {}
        self._deferred: dict[str, Source] = {}
        self._cancelled = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._changed:
            self._cancelled = True  # nothing more arrives: whoever iterates arrivals stops
            self._changed.notify_all()

    def request(self, sources: Iterable[Source], *, deferred: bool = False) -> None:
        """Start downloading each source the store lacks (or, deferred, on the first wait)."""
        with self._changed:
            for source in sources:
                if source.sha256 in self._running or self.store.has(source.sha256):
                    continue
                if deferred:
                    self._deferred.setdefault(source.sha256, source)
                else:
                    self._deferred.pop(source.sha256, None)  # wanted now after all
                    self._start(source)

    def ready(self, sha256: str) -> bool:
        """Whether the file is in the store now (downloaded or there before)."""
        future = self._running.get(sha256)
        if future is not None:
            return future.done() and not future.cancelled() and future.exception() is None
        return self.store.has(sha256)

    def wait(self, sha256: str, *, what: str) -> Path:
        """The file's path in the store once it is there; the download's error if it failed."""
        with self._changed:
            if sha256 in self._deferred:
                self._start(self._deferred.pop(sha256))
            future = self._running.get(sha256)
        if future is None:
            if self.store.has(sha256):
                return self.store.path_for(sha256)
            if self._cancelled:
                msg = f"the build stopped before {what} was downloaded"
                raise BuildError(msg)
            msg = f"{what} is neither in the cache nor being downloaded"
            raise BuildError(msg, hint="run 'omi-build lock' and build again")
        with self._changed:  # not future.result(): a cancel must end the wait at once
            while not future.done() and not self._cancelled:
                self._changed.wait()
        if not future.done() or future.cancelled():
            msg = f"the build stopped before {what} was downloaded"
            raise BuildError(msg)
        return future.result()

    def arrivals(self, digests: Iterable[str]) -> Iterator[str]:
        """Each of `digests` as it is in the store, in the order they arrive; failed and
        deferred ones are skipped, and the iteration ends when the downloads are cancelled."""
        waiting = set(digests)
        while waiting:
            with self._changed:
                arrived = {d for d in waiting if d in self._deferred or self._settled(d)}
                if not arrived:
                    if self._cancelled:
                        return
                    self._changed.wait()
                    continue
            waiting -= arrived
            yield from sorted(d for d in arrived if self.ready(d))

    def finish(self) -> None:
        """Wait for every download started; raise the first one's error."""
        for future in list(self._running.values()):
            future.result()

    def cancel(self) -> None:
        """The build failed: downloads not begun are dropped, and waits give up."""
        with self._changed:
            self._cancelled = True
            self._deferred.clear()
            for future in self._running.values():
                future.cancel()
            self._changed.notify_all()

    def _settled(self, sha256: str) -> bool:
        future = self._running.get(sha256)
        return future.done() if future is not None else True

    def _start(self, source: Source) -> None:
        """Called holding the condition's lock."""
        if self._cancelled:
            return
        future = self._pool.submit(
            self.store.fetch,
            source.url,
            source.sha256,
            what=source.what,
            size=source.size,
            progress=self.progress,
        )
        self._running[source.sha256] = future
        future.add_done_callback(self._notify)

    def _notify(self, _: Future[Path]) -> None:
        with self._changed:
            self._changed.notify_all()
