"""Deterministic bytecode: unchecked hash-based .pyc (PEP 552), compiled in pristine processes.

An image's root filesystem is read-only, so Python cannot cache bytecode at run time: without
these files every start compiles every module again. Hash-based .pyc embed no time stamp, and
`unchecked` skips the source hash check at import (the image never changes).

marshal's output depends on the compiling process's state (reference counts of interned
strings decide back-references): importing numpy first changes the bytes. So compilation runs
in fresh `python -I -S` workers that import nothing else; their output depends only on the
interpreter build and the sources, measured identical across runs and orders.
The interpreter is the image's own where the host can run it (see _interpreter), else the
host's when it is the image's minor version; with neither, no .pyc are written (the image
still works, it starts slower).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from omi_build.errors import BuildError

_WORKER = r"""
import importlib.util, marshal, sys, warnings
warnings.simplefilter("ignore")
data = sys.stdin.buffer.read()
out = sys.stdout.buffer
header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
position = index = 0
while position < len(data):
    path_len = int.from_bytes(data[position:position + 4], "little")
    source_len = int.from_bytes(data[position + 4:position + 12], "little")
    position += 12
    path = data[position:position + path_len].decode()
    position += path_len
    source = data[position:position + source_len]
    position += source_len
    try:
        code = compile(source, "/" + path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        index += 1
        continue
    pyc = header + importlib.util.source_hash(source) + marshal.dumps(code)
    out.write(index.to_bytes(4, "little") + len(pyc).to_bytes(8, "little") + pyc)
    index += 1
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class Compiler:
    """An interpreter of the image's Python version, and how to start it."""

    argv: tuple[str, ...]  # followed by `-c SCRIPT`
    env: dict[str, str] | None  # None: the host's (the host interpreter runs with -I)
    python_version: str
    identity: str  # what the bytecode's bytes depend on, for cache keys

    @property
    def cache_tag(self) -> str:
        return "cpython-" + self.python_version.replace(".", "")


def host_compiler(python_version: str) -> Compiler | None:
    """The interpreter running omi-build, if it is the image's Python version."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" != python_version:
        return None
    return Compiler(
        argv=(sys.executable, "-I", "-S"),
        env=None,
        python_version=python_version,
        identity=f"host {sys.version}",
    )


def cache_path(path: str, tag: str) -> str:
    """`usr/lib/x/mod.py` -> `usr/lib/x/__pycache__/mod.<tag>.pyc` (tag: cpython-311)."""
    directory, _, name = path.rpartition("/")
    stem = name[: -len(".py")]
    return f"{directory}/__pycache__/{stem}.{tag}.pyc" if directory else f"__pycache__/{stem}.{tag}.pyc"


def _frames(items: Iterable[tuple[str, bytes]]) -> bytes:
    parts = []
    for path, payload in items:
        encoded = path.encode()
        parts.append(
            len(encoded).to_bytes(4, "little") + len(payload).to_bytes(8, "little") + encoded + payload
        )
    return b"".join(parts)


def _unframe(data: bytes) -> dict[int, bytes]:
    """The worker's answer: index of a source -> its .pyc."""
    compiled = {}
    position = 0
    while position < len(data):
        index = int.from_bytes(data[position : position + 4], "little")
        length = int.from_bytes(data[position + 4 : position + 12], "little")
        position += 12
        compiled[index] = data[position : position + length]
        position += length
    return compiled


_ONE_AT_A_TIME = threading.Lock()

# (image path of a .py, its source) -> its .pyc, for one build: the second platform of an image,
# and any archive holding the same files, compiles nothing.
Shared = dict[tuple[str, bytes], bytes]


def compile_all(
    sources: Iterable[tuple[str, bytes]], compiler: Compiler, shared: Shared | None = None
) -> list[tuple[str, bytes]]:
    """(image path of a .py, its source) -> (image path of its .pyc, the bytes), sorted.

    One call at a time: each already uses every core, and a second platform waiting finds the
    first's bytecode in `shared`. Sources that do not compile get no .pyc.
    """
    sources = sorted(sources)
    with _ONE_AT_A_TIME:
        known = shared if shared is not None else {}
        pending = [item for item in sources if item not in known]
        for item, data in zip(pending, _compile(pending, compiler), strict=True):
            if data is not None:
                known[item] = data
        compiled = [(path, source) for path, source in sources if (path, source) in known]
        return sorted(
            (cache_path(path, compiler.cache_tag), known[(path, source)]) for path, source in compiled
        )


def _compile(ordered: list[tuple[str, bytes]], compiler: Compiler) -> list[bytes | None]:
    """The .pyc of each source, in order; None where it does not compile."""
    if not ordered:
        return []
    workers = max(1, min(os.cpu_count() or 1, len(ordered) // 50 or 1))
    processes = []
    for index in range(workers):
        try:
            process = subprocess.Popen(
                [*compiler.argv, "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=compiler.env,
            )
        except OSError as exc:
            msg = f"cannot start {compiler.identity} to compile bytecode: {exc}"
            raise BuildError(
                msg,
                hint="the cache folder must allow running programs (not mounted noexec); "
                "OMI_BUILD_CACHE can name another",
            ) from exc
        processes.append((process, _frames(ordered[index::workers])))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda job: (job[0], *job[0].communicate(job[1])), processes))
    results: list[bytes | None] = [None] * len(ordered)
    for worker, (process, stdout, stderr) in enumerate(outcomes):
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip()
            msg = f"compiling bytecode with {compiler.identity} failed: {detail}"
            raise BuildError(msg)
        for index, pyc in _unframe(stdout).items():
            results[worker + index * workers] = pyc
    return results
