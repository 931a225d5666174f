"""House rules that no linter checks: what one package may take from another."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    """The stage a module belongs to: omi_build.<stage>[...]."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path, module: str) -> Iterator[tuple[int, str, str]]:
    """(line, module imported from, name) for every import."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                yield node.lineno, source, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _private_reach_ins(root: Path = REPO) -> list[str]:
    """Imports of a leading-underscore name of another stage (the runtime is exempt: it is one
    package, copied whole into the image)."""
    found = []
    for path in sorted((root / "omi_build").rglob("*.py")):
        module = _module_name(path, root)
        if module.startswith("omi_build.runtime"):
            continue
        for line, source, name in _imports(path, module):
            if not source.startswith("omi_build") or _stage(source) == _stage(module):
                continue
            dotted = f"{source}.{name}" if name else source
            if any(_private(part) for part in dotted.split(".")[1:]):
                found.append(f"{path.relative_to(root)}:{line}: {dotted}")
    return found


def test_no_module_takes_a_private_name_from_another_package() -> None:
    assert _private_reach_ins() == []


def test_the_rule_sees_a_reach_in(tmp_path: Path) -> None:
    (tmp_path / "omi_build" / "layers").mkdir(parents=True)
    (tmp_path / "omi_build" / "layers" / "__init__.py").write_text(
        "from ._tar import Entry\n", encoding="utf-8"
    )
    (tmp_path / "omi_build" / "probe.py").write_text(
        "from omi_build.layers._tar import Entry\n"
        "from omi_build.layers import _tar\n"
        "from omi_build import __version__\n",
        encoding="utf-8",
    )
    assert _private_reach_ins(tmp_path) == [
        "omi_build/probe.py:1: omi_build.layers._tar.Entry",
        "omi_build/probe.py:2: omi_build.layers._tar",
    ]
