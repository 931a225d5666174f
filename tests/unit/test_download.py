"""Downloads: what the layer builder waits on. The network is replaced by a fake fetch."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from omi_build.download import Downloads, Source
from omi_build.errors import BuildError, FetchError
from omi_build.store import Store


def _source(data: bytes, what: str = "a file") -> Source:
    return Source(sha256=hashlib.sha256(data).hexdigest(), size=len(data), what=what, url=f"http://x/{what}")


class _Network:
    """Serves `files` by URL; a URL in `held` waits until released, one in `broken` fails."""

    def __init__(self, store: Store, files: dict[str, bytes]) -> None:
        self.store, self.files = store, files
        self.held: dict[str, threading.Event] = {}
        self.broken: set[str] = set()
        self.asked: list[str] = []

    def fetch(self, url: str, sha256: str, **_: object) -> Path:
        self.asked.append(url)
        assert hashlib.sha256(self.files[url]).hexdigest() == sha256
        if url in self.held:
            self.held[url].wait(10)
        if url in self.broken:
            msg = f"{url}: connection reset"
            raise FetchError(msg)
        return self.store.put_bytes(self.files[url])


def _downloads(tmp_path: Path, *contents: bytes) -> tuple[Downloads, _Network, list[Source]]:
    store = Store(tmp_path / "cache")
    sources = [_source(data, f"f{n}") for n, data in enumerate(contents)]
    network = _Network(store, {s.url: data for s, data in zip(sources, contents, strict=True)})
    store.fetch = network.fetch  # type: ignore[method-assign]
    return Downloads(store), network, sources


def test_a_requested_file_is_waited_for_and_a_stored_one_not_fetched(tmp_path: Path) -> None:
    downloads, network, (one, two) = _downloads(tmp_path, b"one", b"two")
    downloads.store.put_bytes(b"two")
    with downloads:
        downloads.request([one, two])
        assert downloads.wait(one.sha256, what=one.what).read_bytes() == b"one"
        assert downloads.ready(one.sha256)
        assert downloads.wait(two.sha256, what=two.what).read_bytes() == b"two"
        downloads.finish()
    assert network.asked == [one.url]


def test_arrivals_come_in_the_order_they_arrive_and_skip_failures(tmp_path: Path) -> None:
    downloads, network, (slow, fast, broken) = _downloads(tmp_path, b"slow", b"fast", b"broken")
    network.held[slow.url] = threading.Event()
    network.broken.add(broken.url)
    with downloads:
        downloads.request([slow, fast, broken])
        seen = []
        for digest in downloads.arrivals([slow.sha256, fast.sha256, broken.sha256]):
            seen.append(digest)
            network.held[slow.url].set()
        assert seen == [fast.sha256, slow.sha256]
        with pytest.raises(FetchError, match="connection reset"):
            downloads.wait(broken.sha256, what=broken.what)
        with pytest.raises(FetchError):
            downloads.finish()


def test_a_deferred_file_is_fetched_only_when_waited_for(tmp_path: Path) -> None:
    downloads, network, (python,) = _downloads(tmp_path, b"the host's python")
    with downloads:
        downloads.request([python], deferred=True)
        assert list(downloads.arrivals([python.sha256])) == []  # not started, so never arrives
        assert network.asked == []
        assert downloads.wait(python.sha256, what=python.what).read_bytes() == b"the host's python"
    assert network.asked == [python.url]


def test_cancel_ends_every_wait_at_once(tmp_path: Path) -> None:
    downloads, network, (stuck, later) = _downloads(tmp_path, b"stuck", b"later")
    network.held[stuck.url] = threading.Event()
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            downloads.wait(stuck.sha256, what="the stuck file")
        except BuildError as exc:
            errors.append(exc)

    with downloads:
        downloads.request([stuck])
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.05)
        started = time.monotonic()
        downloads.cancel()
        thread.join(5)
        assert time.monotonic() - started < 1  # not when the download would have ended
        network.held[stuck.url].set()
        downloads.request([later])  # nothing starts after a cancel
    assert [str(e) for e in errors] == ["the build stopped before the stuck file was downloaded"]
    assert later.url not in network.asked
    with pytest.raises(BuildError, match="stopped before"):
        downloads.wait(later.sha256, what="the later file")


def test_waiting_for_a_file_never_requested_is_a_clear_error(tmp_path: Path) -> None:
    downloads, _, (one,) = _downloads(tmp_path, b"one")
    with downloads, pytest.raises(BuildError, match="neither in the cache nor being downloaded"):
        downloads.wait(one.sha256, what=one.what)


def test_an_error_in_the_block_cancels_the_rest_and_leaves_no_thread(tmp_path: Path) -> None:
    downloads, network, sources = _downloads(tmp_path, *(f"file {n}".encode() for n in range(12)))
    for source in sources:
        network.held[source.url] = threading.Event()

    def release() -> None:
        for event in network.held.values():
            event.set()

    threading.Timer(0.2, release).start()
    before = threading.active_count()

    def failing_build() -> None:
        with downloads:
            downloads.request(sources)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        failing_build()
    # the 8 downloads running ended (they cannot be interrupted); the 4 queued never started
    assert len(network.asked) == 8
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before
    with pytest.raises(BuildError, match="stopped before"):
        downloads.wait(sources[-1].sha256, what="the last file")


def test_a_deferred_file_requested_again_is_fetched_and_arrives(tmp_path: Path) -> None:
    downloads, network, (python,) = _downloads(tmp_path, b"python")
    with downloads:
        downloads.request([python], deferred=True)
        downloads.request([python])  # a platform built here needs it too
        assert list(downloads.arrivals([python.sha256])) == [python.sha256]
    assert network.asked == [python.url]
