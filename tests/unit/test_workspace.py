from __future__ import annotations

from pathlib import Path

import pytest

from omi_build import workspace
from omi_build.errors import WorkspaceError
from omi_build.scaffold import write

TARGETS = """
targets:
  cpu: {accelerator: cpu}
  cuda: {accelerator: cuda, cuda: "12.4"}
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / workspace.WORKSPACE_MARKER).write_text("")
    for name in ("models/iris", "models/resnet", "tools/other"):
        write(tmp_path / name)
    manifest = tmp_path / "models/resnet/omi.yaml"
    text = manifest.read_text()
    start = text.index("targets:")
    end = text.index("serving:")
    manifest.write_text(text[:start] + TARGETS.lstrip() + text[end:])
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden")
    return tmp_path


def labels(args: list[str], cwd: Path) -> list[str]:
    return [label for s in workspace.resolve(args, cwd) for label in s.labels()]


def test_all_packages(repo: Path) -> None:
    assert labels(["//..."], repo) == [
        "//models/iris:cpu",
        "//models/resnet:cpu",
        "//models/resnet:cuda",
        "//tools/other:cpu",
    ]


def test_subtree_package_and_target(repo: Path) -> None:
    assert labels(["//models/..."], repo) == [
        "//models/iris:cpu",
        "//models/resnet:cpu",
        "//models/resnet:cuda",
    ]
    assert labels(["//models/resnet"], repo) == ["//models/resnet:cpu", "//models/resnet:cuda"]
    assert labels(["//models/resnet:cuda"], repo) == ["//models/resnet:cuda"]


def test_relative_labels_and_paths(repo: Path) -> None:
    here = repo / "models/resnet"
    assert labels([":cuda"], here) == ["//models/resnet:cuda"]
    assert labels(["resnet:cpu"], repo / "models") == ["//models/resnet:cpu"]
    assert labels([], here) == ["//models/resnet:cpu", "//models/resnet:cuda"]
    assert labels(["../iris"], here) == ["//models/iris:cpu"]
    assert labels([], repo / "models") == [
        "//models/iris:cpu",
        "//models/resnet:cpu",
        "//models/resnet:cuda",
    ]


def test_repeated_selections_merge(repo: Path) -> None:
    assert labels(["//models/resnet:cuda", "//models/resnet:cpu", "//models/resnet"], repo) == [
        "//models/resnet:cuda",
        "//models/resnet:cpu",
    ]


def test_git_root_without_marker(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write(tmp_path / "a")
    assert labels(["//..."], tmp_path / "a") == ["//a:cpu"]


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("//models/nope", "no package //models/nope"),
        ("//models/iris:gpu", "has no target 'gpu'"),
        ("//nothing/...", "matches no package"),
        ("//...:cpu", "takes no ':cpu'"),
        ("../../..:cpu", "outside the workspace"),
    ],
)
def test_bad_labels(repo: Path, label: str, message: str) -> None:
    with pytest.raises(WorkspaceError, match=message):
        workspace.resolve([label], repo / "models/iris")


def test_no_argument_at_the_workspace_root_means_every_package(repo: Path) -> None:
    names = [s.package.name for s in workspace.resolve([], cwd=repo)]
    assert names == ["models/iris", "models/resnet", "tools/other"]
    assert [p.name for p in workspace.packages([], cwd=repo)] == names
    assert [p.name for p in workspace.packages(["..."], cwd=repo)] == names
    with pytest.raises(WorkspaceError, match="points outside the workspace"):
        workspace.resolve(["../../x:cpu"], cwd=repo / "models")
    with pytest.raises(WorkspaceError, match="points outside the workspace"):
        workspace.resolve(["..:cpu"], cwd=repo)


def test_a_missing_path_names_the_folder_to_init(repo: Path) -> None:
    with pytest.raises(WorkspaceError, match="does not exist") as exc:
        workspace.resolve([str(repo / "models/nothere")], cwd=repo)
    assert exc.value.hint == f"run 'omi-build init {repo / 'models/nothere'}' to write one"
    with pytest.raises(WorkspaceError) as exc:
        workspace.resolve([str(repo / "models/nothere/omi.yaml")], cwd=repo)
    assert exc.value.hint == f"run 'omi-build init {repo / 'models/nothere'}' to write one"
