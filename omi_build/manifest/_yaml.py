"""YAML 1.2 loading that keeps the position of every node and refuses YAML's traps.

PyYAML implements YAML 1.1, where `no` is false, `010` is eight and `1e3` is text. A manifest
that means something different to PyYAML, to a YAML 1.2 reader (Go, Rust, JS tooling) and to
the person who wrote it is an error here, reported with a fix, never silently guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

Path = tuple[str | int, ...]

_PLAIN = "tag:omi-build,2024:plain"  # marks an untagged plain scalar, resolved below
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"

# YAML 1.2 core schema.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT10 = re.compile(r"^[-+]?[0-9]+$")
_INT8 = re.compile(r"^0o[0-7]+$")
_INT16 = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")

# Plain scalars that YAML 1.1 and YAML 1.2 read differently.
_YAML11_BOOL = re.compile(r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$")
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9]+$")
_EXPONENT_NO_DOT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_BINARY_OR_UNDERSCORE = re.compile(r"^[-+]?(?:0b[01_]+|[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?)$")

# Alias expansion is bounded: a few anchors can otherwise describe a billion nodes. Only nodes
# reached again through an alias count: what is written out is bounded by the text's size, so
# a large literal example (50,000 rows) is fine, while a billion laughs stops here.
MAX_ALIAS_NODES = 200_000
# Deeper than any manifest needs, shallow enough for every recursive check after parsing.
MAX_DEPTH = 64
_MAX_INT_DIGITS = 4000  # Python refuses to convert more than 4,300 digits


class _Loader(Reader, Scanner, Parser, Composer, BaseResolver):
    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        BaseResolver.__init__(self)


_Loader.add_implicit_resolver(_PLAIN, re.compile(r"(?s).*"), None)


@dataclass(frozen=True, slots=True)
class Problem:
    """A YAML-level problem at a 1-based position."""

    line: int
    col: int
    path: Path
    message: str


@dataclass(slots=True)
class Document:
    """Plain data (dict, list, str, int, float, bool, None) plus where each piece was written."""

    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    sources: dict[Path, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Where `path` was written; the nearest written ancestor for a missing one."""
        if key and path in self.keys:
            return self.keys[path]
        probe = path
        while probe not in self.values and probe:
            probe = probe[:-1]
        return self.values.get(probe, (1, 1))


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _tab_problems(text: str) -> list[Problem]:
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            problems.append(
                Problem(
                    number,
                    indent.index("\t") + 1,
                    (),
                    "tab in indentation; YAML indents with spaces only: replace the tab with spaces",
                )
            )
    return problems


def _ambiguity(text: str) -> str | None:
    if _YAML11_BOOL.match(text):
        boolean = "true" if text.lower() in {"yes", "on"} else "false"
        return (
            f"'{text}' is a boolean in YAML 1.1 but text in YAML 1.2; "
            f'write {boolean} for a boolean, or "{text}" in quotes for text'
        )
    if _LEADING_ZERO.match(text):
        return (
            f"'{text}' is an octal number in YAML 1.1 and decimal in YAML 1.2; "
            f'write {int(text)} or 0o{text.lstrip("+-0") or "0"}, or "{text}" in quotes for text'
        )
    if _EXPONENT_NO_DOT.match(text):
        number = float(text)
        shown = str(int(number)) if number.is_integer() and abs(number) < 1e18 else repr(number)
        return (
            f"'{text}' is text in YAML 1.1 but a number in YAML 1.2; "
            f'write {shown} for a number, or "{text}" in quotes for text'
        )
    if _SEXAGESIMAL.match(text) or _BINARY_OR_UNDERSCORE.match(text):
        return (
            f"'{text}' is a number in YAML 1.1 but text in YAML 1.2; "
            f'write "{text}" in quotes for text, or the plain decimal number'
        )
    return None


def _plain_value(text: str) -> Any:
    if _NULL.match(text):
        return None
    if _TRUE.match(text):
        return True
    if _FALSE.match(text):
        return False
    if _INT10.match(text):
        return int(text)  # digits bounded by the caller
    if _INT8.match(text):
        return int(text, 0)
    if _INT16.match(text):
        return int(text, 0)
    if _FLOAT.match(text):
        return float(text)
    if _INF.match(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.match(text):
        return math.nan
    return text


class _Converter:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.budget = MAX_ALIAS_NODES
        self.active: set[int] = set()
        self.seen: set[int] = set()
        self.too_deep = False

    def convert(self, node: Node, path: Path) -> Any:
        if id(node) in self.seen:  # reached again: through an alias
            self.budget -= 1
            if self.budget < 0:
                if self.budget == -1:
                    line, col = _pos(node)
                    message = (
                        f"aliases expand the document past {MAX_ALIAS_NODES:,} nodes; "
                        "write the values out, or use fewer aliases"
                    )
                    self.doc.problems.append(Problem(line, col, path, message))
                return None
        else:
            self.seen.add(id(node))
        if len(path) > MAX_DEPTH:
            if not self.too_deep:
                self.too_deep = True
                line, col = _pos(node)
                message = f"nested deeper than {MAX_DEPTH} levels; a manifest never needs that many"
                self.doc.problems.append(Problem(line, col, path[:MAX_DEPTH], message))
            return None
        self.doc.values.setdefault(path, _pos(node))
        if id(node) in self.active:
            line, col = _pos(node)
            self.doc.problems.append(Problem(line, col, path, "an alias refers to itself"))
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
        finally:
            self.active.discard(id(node))
        return None  # pragma: no cover - PyYAML has only these three node kinds

    def _explicit_tag(self, node: Node, path: Path, allowed: str) -> None:
        if node.tag != allowed:
            line, col = _pos(node)
            shown = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.doc.problems.append(
                Problem(
                    line,
                    col,
                    path,
                    f"explicit tag '{shown}' is not allowed; remove it",
                )
            )

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        text = str(node.value)
        if node.tag == _PLAIN:
            self.doc.sources[path] = text
            digits = len(text.lstrip("+-"))
            if digits > _MAX_INT_DIGITS and _INT10.match(text):
                line, col = _pos(node)
                too_large = f"a number of {digits:,} digits is too large; no field takes one"
                self.doc.problems.append(Problem(line, col, path, too_large))
                return text
            message = _ambiguity(text)
            if message is not None:
                line, col = _pos(node)
                self.doc.problems.append(Problem(line, col, path, message))
                return text
            return _plain_value(text)
        self._explicit_tag(node, path, _STR)
        return text

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        self._explicit_tag(node, path, _MAP)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                line, col = _pos(key_node)
                self.doc.problems.append(
                    Problem(line, col, path, "a mapping key must be plain text, not a mapping or list")
                )
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in result or child in self.doc.keys:
                first_line, _ = self.doc.keys[child]
                line, col = _pos(key_node)
                self.doc.problems.append(
                    Problem(
                        line,
                        col,
                        child,
                        f"duplicate key '{key}' (first given on line {first_line}); keep one of them",
                    )
                )
                continue
            self.doc.keys[child] = _pos(key_node)
            result[key] = self.convert(value_node, child)
        return result

    def _sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        self._explicit_tag(node, path, _SEQ)
        return [self.convert(item, (*path, index)) for index, item in enumerate(node.value)]


def _reader_problem(text: str, exc: yaml.reader.ReaderError) -> Problem:
    """A control character (NUL, BEL, ...) where YAML allows none, located."""
    before = text[: exc.position]
    line = before.count("\n") + 1
    col = exc.position - (before.rfind("\n") + 1) + 1
    shown = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
    return Problem(
        line,
        col,
        (),
        f"control character {shown} is not allowed in YAML; remove it "
        "(or write it as an escape in a double-quoted string)",
    )


def parse(text: str) -> Document:
    """Parse one YAML document into plain data with positions and problems.

    >>> parse("a: [1, yes]").problems[0].message.startswith("'yes' is a boolean")
    True
    """
    tabs = _tab_problems(text)
    if tabs:
        return Document(data=None, problems=tabs)
    loader = None
    try:
        loader = _Loader(text)  # the reader refuses control characters at once
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "another document" in problem:
            problem = "a manifest is one YAML document; remove the '---' and what follows it"
        elif exc.context and exc.context_mark and exc.problem_mark:
            start = exc.context_mark
            problem += f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
        return Document(data=None, problems=[Problem(line, col, (), f"invalid YAML: {problem}")])
    except yaml.reader.ReaderError as exc:
        return Document(data=None, problems=[_reader_problem(text, exc)])
    except yaml.YAMLError as exc:
        return Document(data=None, problems=[Problem(1, 1, (), f"invalid YAML: {exc}")])
    except RecursionError:
        message = f"nested deeper than {MAX_DEPTH} levels; a manifest never needs that many"
        return Document(data=None, problems=[Problem(1, 1, (), message)])
    finally:
        if loader is not None:
            loader.dispose()
    doc = Document(data=None)
    if root is None:
        doc.problems.append(Problem(1, 1, (), "the file is empty; run 'omi-build init' for a start"))
        return doc
    doc.data = _Converter(doc).convert(root, ())
    return doc
