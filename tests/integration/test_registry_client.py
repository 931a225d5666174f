"""The registry client against the in-process test registry (tests/oci_registry.py): push and
pull of a signed layout with its referrers, both with the referrers API and with the fallback
index; bearer and basic auth; concurrent writers of one fallback index; connections dropped
mid-push; existing tags; missing digests. Loopback only, every loop bounded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from omi_build.digests import canonical, digest_of
from omi_build.errors import RegistryError
from omi_build.image.layout import Layout
from omi_build.push import pull, push, referrers_of
from omi_build.registry import Client, Reference, add_referrers, fallback_tag, list_referrers
from omi_build.sign import KeySigner, keys, sign
from omi_build.verify import Trust, verify
from tests import oci_registry
from tests.unit.layouts import TAG, described_layout

pytestmark = pytest.mark.integration  # sockets on 127.0.0.1


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate()


def _signed(tmp_path: Path, key: keys.PrivateKey) -> Layout:
    path, _, _ = described_layout(tmp_path)
    sign(Layout.open(path), KeySigner(key), reference="tiny:1.0.0")
    return Layout.open(path)


_OPEN: list[Client] = []


def _client(reference: Reference) -> Client:
    made = Client(reference)
    _OPEN.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture(autouse=True)
def _no_auth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "no-auth.json"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("OMI_NETWORK_ATTEMPTS", "3")


@pytest.mark.parametrize("api", [True, False], ids=["referrers-api", "fallback-index"])
def test_push_then_pull_keeps_digests_and_referrers_and_verifies(
    tmp_path: Path, key: keys.PrivateKey, api: bool
) -> None:
    layout = _signed(tmp_path, key)
    index = layout.target_index(TAG).digest
    with oci_registry.serve(referrers_api=api) as (address, state):
        reference = Reference.parse(f"{address}/team/tiny")
        client = _client(reference)
        pushed = push(layout, reference, client)
        assert pushed.digest == index
        assert pushed.referrers_api is api
        assert pushed.reference == f"{address}/team/tiny:{TAG}@{index}"
        assert state.tags["team/tiny"][TAG] == index
        assert (fallback_tag(index) in state.tags["team/tiny"]) is not api
        listed = referrers_of(client, reference.with_tag(TAG))
        assert len(listed) == sum(len(layout.referrers(s["subject"])) for s in [{"subject": index}]) + sum(
            len(layout.referrers(image.digest)) for image in layout.images()
        )
        assert all(entry["artifactType"] for entry in listed)
        pulled = pull(client, reference.with_tag(TAG), tmp_path / "pulled")
        assert pulled.digest == index
        again = Layout.open(tmp_path / "pulled")
        assert [i.digest for i in again.images()] == [i.digest for i in layout.images()]
        checks = verify(again, Trust(key=key.public, require=frozenset({"sbom", "provenance", "model"})))
        assert {c.what for c in checks} >= {"signature", "classic signature"}
        # a second push sends no blob again
        second = push(layout, reference, client)
        assert second.blobs == {"exists": sum(pushed.blobs.values())}


def test_a_second_repository_mounts_blobs_instead_of_uploading(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout = _signed(tmp_path, key)
    with oci_registry.serve() as (address, _state):
        first = Reference.parse(f"{address}/cache/tiny")
        client = _client(first)
        push(layout, first, client)
        second = push(layout, Reference.parse(f"{address}/apps/tiny"), client, mount_from=("cache/tiny",))
        assert set(second.blobs) == {"mounted"}


def test_bearer_tokens_and_basic_auth_from_an_auth_file(
    tmp_path: Path, key: keys.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64  # noqa: PLC0415

    layout = _signed(tmp_path, key)
    for kind in ("bearer", "basic"):
        with oci_registry.serve(auth=kind) as (address, _state):
            reference = Reference.parse(f"{address}/tiny")
            with pytest.raises(RegistryError, match="needs credentials") as anonymous:
                push(layout, reference, _client(reference))
            assert "docker login" in (anonymous.value.hint or "")
            auth = tmp_path / f"{kind}.json"
            wrong = base64.b64encode(b"omi:wrong").decode()
            auth.write_text(json.dumps({"auths": {address: {"auth": wrong}}}))
            monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
            with pytest.raises(RegistryError, match=f"refused the credentials .* from {auth}"):
                push(layout, reference, _client(reference))
            right = base64.b64encode(b"omi:secret").decode()
            auth.write_text(json.dumps({"auths": {address: {"auth": right}}}))
            assert push(layout, reference, _client(reference)).digest == layout.target_index(TAG).digest
            monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))


def test_concurrent_writers_of_one_fallback_index_lose_nothing() -> None:
    subject = digest_of(b"subject")
    with oci_registry.serve() as (address, state):
        reference = Reference.parse(f"{address}/race")
        client = _client(reference)
        descriptors = [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(bytes([n])),
             "size": 1,
             "artifactType": f"application/x-test-{n}"}
            for n in range(8)
        ]  # fmt: skip
        errors: list[BaseException] = []

        def writer(descriptor: dict[str, object]) -> None:
            try:
                add_referrers(_client(reference), "race", subject, [descriptor])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(d,)) for d in descriptors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        listed = {entry["digest"] for entry in list_referrers(client, "race", subject)}
        assert listed == {d["digest"] for d in descriptors}
        assert len([r for r in state.requests if r[0] == "PUT"]) >= 8


def test_a_registry_that_drops_the_connection_mid_push_leaves_no_tag(
    tmp_path: Path, key: keys.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMI_NETWORK_ATTEMPTS", "1")
    layout = _signed(tmp_path, key)
    with oci_registry.serve(drop_puts_after=3) as (address, state):
        reference = Reference.parse(f"{address}/tiny")
        with pytest.raises(RegistryError, match="failed"):
            push(layout, reference, _client(reference))
        assert TAG not in state.tags.get("tiny", {})
        monkeypatch.setenv("OMI_NETWORK_ATTEMPTS", "3")
        state.drop_puts_after = 1  # one more drop: retried this time
        assert push(layout, reference, _client(reference)).digest == layout.target_index(TAG).digest


def test_an_existing_tag_is_not_moved_unless_forced(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout = _signed(tmp_path, key)
    with oci_registry.serve() as (address, state):
        reference = Reference.parse(f"{address}/tiny:{TAG}")
        client = _client(reference)
        empty = canonical(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
        )
        client.put_manifest("tiny", TAG, empty, "application/vnd.oci.image.index.v1+json")
        with pytest.raises(RegistryError, match="already names another image") as refused:
            push(layout, reference, client)
        assert "--force" in (refused.value.hint or "")
        assert state.tags["tiny"][TAG] == digest_of(empty)
        assert push(layout, reference, client, force=True).digest == layout.target_index(TAG).digest


def test_bad_references_and_missing_images_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="not a repository name"):
        Reference.parse("127.0.0.1:5000/Upper/Case")
    with oci_registry.serve() as (address, _state):
        missing = Reference.parse(f"{address}/tiny@sha256:{'0' * 64}")
        with pytest.raises(RegistryError, match="does not exist"):
            pull(_client(missing), missing, tmp_path / "out")
        assert not (tmp_path / "out").exists()
    closed = Reference.parse(f"{address}/tiny:1")  # the server is gone
    with pytest.raises(RegistryError, match="cannot reach the registry"):
        _client(closed).manifest_digest("tiny", "1")


def test_a_hostile_registry_cannot_name_files_outside_the_layout(tmp_path: Path) -> None:
    hostile = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:../../../escape", "size": 2},
        "layers": [],
    }  # fmt: skip
    data = json.dumps(hostile).encode()
    digest = digest_of(data)
    with oci_registry.serve() as (address, state):
        state.manifests["evil"] = {digest: (data, "application/vnd.oci.image.manifest.v1+json")}
        state.tags["evil"] = {"1": digest}
        reference = Reference.parse(f"{address}/evil:1")
        with pytest.raises(RegistryError, match="malformed digest"):
            pull(_client(reference), reference, tmp_path / "out" / "layout")
    assert not list(tmp_path.rglob("*escape*"))


def test_a_busy_registry_is_retried_with_backoff(tmp_path: Path, key: keys.PrivateKey) -> None:
    layout = _signed(tmp_path, key)
    with oci_registry.serve() as (address, state):
        reference = Reference.parse(f"{address}/tiny")
        state.busy = 2  # fewer than OMI_NETWORK_ATTEMPTS (3): each request may meet one or two
        assert push(layout, reference, _client(reference)).digest == layout.target_index(TAG).digest
        state.busy = 100
        with pytest.raises(RegistryError, match="HTTP 503"):
            pull(_client(reference), reference.with_tag(TAG), tmp_path / "busy")
