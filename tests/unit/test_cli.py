"""The CLI in-process: exit codes, renderers, and every verb."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from omi_build.cli import main
from omi_build.errors import OmiError
from omi_build.manifest._yaml import parse
from tests.conftest import CORPUS, EXAMPLES, REPO, corpus_package

BAD = CORPUS / "invalid" / "many-problems-sorted"


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _no_github(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


def test_validate_example_succeeds() -> None:
    code, out, err = run(["validate", str(EXAMPLES / "iris-sklearn")])
    assert (code, err) == (0, "")
    assert "iris-classifier 1.0.0" in out


def test_validate_reports_all_problems_sorted_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(corpus_package(BAD, tmp_path))
    code, out, err = run(["validate"])
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 6
    positions = [tuple(map(int, line.split(":")[1:3])) for line in lines[:-1]]
    assert positions == sorted(positions)
    assert lines[-1] == "error: 5 problems in the manifest (1 file)"


def test_validate_json_format(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(corpus_package(BAD, tmp_path))
    code, out, _ = run(["--format", "json", "validate"])
    payload = json.loads(out)
    assert code == 2
    assert payload["ok"] is False
    assert payload["reference"] == "manifest-invalid"
    assert payload["issues"][2] == {
        "file": "omi.yaml",
        "line": 16,
        "col": 9,
        "field": "serving.port",
        "message": "70000 is greater than the maximum of 65535",
    }


def test_format_after_the_verb_works_too() -> None:
    code, out, _ = run(["validate", "--format", "json", str(EXAMPLES / "iris-sklearn")])
    assert code == 0
    assert json.loads(out)["manifests"][0]["name"] == "iris-classifier"


def test_github_actions_annotations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(corpus_package(BAD, tmp_path))
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, _ = run(["validate"])
    assert code == 2
    annotations = out.splitlines()
    assert len(annotations) == 5
    assert annotations[2] == (
        "::error file=omi.yaml,line=16,col=9,title=omi.yaml::"
        "serving.port: 70000 is greater than the maximum of 65535"
    )


def test_missing_manifest_exits_1_with_hint(tmp_path: Path) -> None:
    code, _, err = run(["validate", str(tmp_path)])
    assert code == 1
    assert "no omi.yaml" in err
    assert "hint: run 'omi-build init" in err


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        run(["frobnicate"])
    assert exc.value.code == 2


def test_schema_prints_a_valid_2020_12_schema_that_examples_satisfy() -> None:
    code, out, _ = run(["schema"])
    assert code == 0
    printed = json.loads(out)
    Draft202012Validator.check_schema(printed)
    for manifest in EXAMPLES.glob("*/omi.yaml"):
        doc = parse(manifest.read_text())
        assert list(Draft202012Validator(printed).iter_errors(doc.data)) == []


def test_init_writes_a_manifest_that_validates(tmp_path: Path) -> None:
    target = tmp_path / "My Model"
    code, out, _ = run(["init", str(target)])
    assert code == 0
    assert "wrote" in out
    assert run(["validate", str(target)])[0] == 0
    assert "name: my-model" in (target / "omi.yaml").read_text()
    code, _, err = run(["init", str(target)])
    assert code == 1
    assert "--force" in err
    assert run(["init", "--force", str(target)])[0] == 0


def test_query_lists_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    code, out, _ = run(["query", "//examples/..."])
    assert code == 0
    assert "//examples/iris-sklearn:cpu" in out.splitlines()
    code, out, _ = run(["--format", "json", "query", "//examples/iris-sklearn:cpu"])
    (row,) = json.loads(out)
    assert row["platforms"] == ["linux/amd64", "linux/arm64"]


def test_every_verb_has_help() -> None:
    for verb in ("validate", "schema", "init", "query"):
        with pytest.raises(SystemExit) as exc:
            run([verb, "--help"])
        assert exc.value.code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "does/not/exist"],
        ["lock", "--check", "does/not/exist"],
        ["lock", "--check", str(BAD)],
        ["build", "does/not/exist"],
        ["build", "//nothing:here"],
        ["run", "does/not/exist"],
        ["test", "does/not/exist"],
        ["query", "//nothing/..."],
        ["schema"],
        ["--format", "json", "validate", str(BAD)],
        ["--format", "json", "build", "does/not/exist"],
    ],
)
def test_no_command_prints_a_traceback_on_its_error_paths(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMI_BUILD_CACHE", str(tmp_path / "cache"))
    code, out, err = run(args)
    assert code in {0, 1, 2}
    assert "Traceback" not in out + err
    if code:
        assert "error" in (err or out)
    if "json" in args:
        assert json.loads(out)["reference"] in {cls.reference for cls in _error_classes()}


def test_an_unexpected_error_is_one_line_and_its_traceback_needs_v(monkeypatch: pytest.MonkeyPatch) -> None:
    from omi_build import api  # noqa: PLC0415

    def broken(*_: object, **__: object) -> object:
        message = "a bug"
        raise ZeroDivisionError(message)

    monkeypatch.setattr(api, "validate", broken)
    code, _, err = run(["validate", str(EXAMPLES / "iris-sklearn")])
    assert code == 1
    assert "Traceback" not in err
    assert "internal error: ZeroDivisionError: a bug" in err
    assert "-v" in err
    code, _, err = run(["-v", "validate", str(EXAMPLES / "iris-sklearn")])
    assert code == 1
    assert "Traceback" in err

    def denied(*_: object, **__: object) -> object:
        raise PermissionError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(api, "validate", denied)
    code, _, err = run(["validate", str(EXAMPLES / "iris-sklearn")])
    assert (code, "Traceback" in err) == (1, False)
    assert "Permission denied (/some/file)" in err


def _error_classes() -> list[type[OmiError]]:
    found, waiting = [], [OmiError]
    while waiting:
        cls = waiting.pop()
        found.append(cls)
        waiting.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_its_own_stable_kebab_case_reference() -> None:
    classes = _error_classes()
    assert len(classes) >= 12
    for cls in classes:
        assert "reference" in vars(cls), f"{cls.__name__} inherits its reference"
        assert re.fullmatch(r"[a-z]+(-[a-z]+)+|omi-error", cls.reference), cls.reference
    assert len({cls.reference for cls in classes}) == len(classes)
