"""The security policy at build time, on the iris example: a model breaking a rule fails the
build naming the rule and the item and writes nothing to the output; the same model with the
rule allowed builds."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from omi_build import api, cli
from omi_build.build import BuiltImage
from omi_build.errors import LockError, PolicyError

from .conftest import copy_example

pytestmark = pytest.mark.integration

_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n"
_CASES = {
    # rule: (what to change in omi.yaml, the error's pattern, the change that allows it)
    "secrets": (
        {"files: [model.py, model.npz]": "files: [model.py, model.npz, id_rsa]"},
        r"rule secrets: id_rsa \(named like a private key",
        {"security:\n": "security:\n  allow_secret_files: [id_rsa]\n"},
    ),
    "licenses": (
        {"deny: [AGPL-3.0-only, AGPL-3.0-or-later]": "deny: [0BSD]"},  # a part of numpy's
        r"rule licenses \(linux/amd64\): the wheel numpy 2\.4\.6 is licensed BSD-3-Clause AND 0BSD",
        {"deny: [0BSD]": "deny: [AGPL-3.0-only]"},
    ),
    "no-setuid": (  # a real Debian package that ships setuid binaries
        {"python:\n": "system:\n  packages: [mount]\npython:\n"},
        r"rule no-setuid \(linux/amd64\): .*/usr/bin/mount",
        {"system:\n  packages: [mount]\n": ""},
    ),
    "max-image-size": (
        {"security:\n": "security:\n  max_image_size: 50MB\n"},
        r"rule max-image-size \(linux/amd64\): 135\.\d MB is over 50MB",
        {"max_image_size: 50MB": "max_image_size: 200MB"},
    ),
}


def _edit(example: Path, changes: dict[str, str]) -> None:
    text = (example / "omi.yaml").read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    (example / "omi.yaml").write_text(text)


@pytest.mark.parametrize("rule", sorted(_CASES))
def test_a_broken_rule_fails_the_build_and_writes_nothing_and_allowing_it_builds(
    rule: str, iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, images = iris_build
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))  # warm: no download
    example = copy_example(tmp_path)
    (example / "id_rsa").write_text(_KEY)
    breaking, message, allowing = _CASES[rule]
    _edit(example, breaking)
    out = tmp_path / "out"
    locked = rule != "no-setuid"  # a new system package: the lock resolves again
    with pytest.raises(PolicyError, match=message) as failure:
        api.build([str(example)], output=out, locked=locked, platform="linux/amd64")
    assert failure.value.reference == "policy-violation"
    assert not out.exists()
    report = api.policy([str(example)], locked=locked, platform="linux/amd64")
    assert [r.rule for r in report[0].policy if not r.ok] == [rule]
    _edit(example, allowing)
    built = api.build([str(example)], output=out, locked=locked, platform="linux/amd64")
    assert built[0].images[0].platform == "linux/amd64"
    assert all(r.ok for r in built[0].policy)
    if rule not in {"secrets", "no-setuid"}:  # (a lock resolved again may take newer updates)
        assert built[0].images[0].digest == images[0].digest  # the policy changes no byte


def test_the_policy_command_prints_every_rule_and_exits_1_on_a_broken_one(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = iris_build
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    example = copy_example(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--format", "json", "policy", "--locked", str(example)], out, err) == 0
    rules = json.loads(out.getvalue())["rules"]
    assert {r["rule"] for r in rules} == {
        "user", "hash-pinned", "wheels-only", "secrets",
        "licenses", "no-setuid", "no-shell", "max-image-size",
    }  # fmt: skip
    assert {r["platform"] for r in rules if r["rule"] == "licenses"} == {"linux/amd64", "linux/arm64"}
    _edit(example, {"security:\n": "security:\n  max_image_size: 1MB\n"})
    out = io.StringIO()
    assert cli.main(["policy", "--locked", str(example)], out, err) == 1
    assert "FAIL max-image-size linux/arm64" in out.getvalue()
    assert "to allow: raise security.max_image_size" in out.getvalue()
    assert not (example / "omi-out").exists()  # policy writes no output


def test_an_sdist_only_requirement_locks_only_with_the_switch_and_builds_reproducibly(
    iris_build: tuple[Path, list[BuiltImage]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docopt 0.6.2 publishes an sdist only: without allow_source_builds the lock refuses it
    and says how to allow it; with it, the wheel is built in a venv of pinned wheels, recorded
    in the lock with its sdist, and built again from empty caches to the same bytes."""
    directory, _ = iris_build
    example = copy_example(tmp_path)
    _edit(example, {"    - numpy==2.4.6\n": "    - numpy==2.4.6\n    - docopt==0.6.2\n"})
    monkeypatch.setenv("OMI_BUILD_CACHE", str(directory / "cache"))
    out = tmp_path / "out"
    with pytest.raises(LockError, match="docopt") as failure:
        api.build([str(example)], output=out, platform="linux/amd64")
    assert "allow_source_builds" in (failure.value.hint or "")
    assert not out.exists()
    _edit(example, {"allow_source_builds: false": "allow_source_builds: true"})
    digests = []
    for run in ("first", "second"):
        monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / f"cache-{run}"))  # the wheel is built again
        built = api.build([str(example)], output=tmp_path / run, platform="linux/amd64")
        digests.append(built[0].images[0].digest)
        wheels_only = next(r for r in built[0].policy if r.rule == "wheels-only")
        assert wheels_only.ok
        assert "1 built from sdists" in wheels_only.found
    assert digests[0] == digests[1]
    locked = json.loads((example / "omi.lock").read_text())["targets"]["cpu"]["linux/amd64"]["wheels"]
    docopt = next(w for w in locked if w["name"] == "docopt")
    assert docopt["filename"] == "docopt-0.6.2-py2.py3-none-any.whl"
    assert docopt["source"]["sdist"]["filename"] == "docopt-0.6.2.tar.gz"
    assert [w["filename"].split("-")[0] for w in docopt["source"]["buildWheels"]] == ["setuptools"]
