"""Deterministic bytecode: unchecked hash-based .pyc (PEP 552), compiled in pristine processes.

An image's root filesystem is read-only, so Python cannot cache bytecode at run time: without
these files every start compiles every module again. Hash-based .pyc embed no time stamp, and
`unchecked` skips the source hash check at import (the image never changes).

marshal's output depends on the compiling process's state (reference counts of interned
strings decide back-references): importing numpy first changes the bytes. So compilation runs
in fresh `python -I -S` workers that import nothing else; their output depends only on the
interpreter build and the sources, measured identical across runs and orders.
Compiling needs an interpreter of the image's Python minor version; where the host has another,
no .pyc are written (the image still works, it starts slower).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from omi_build.errors import BuildError

_WORKER = r"""
import importlib.util, marshal, sys, warnings
warnings.simplefilter("ignore")
data = sys.stdin.buffer.read()
out = sys.stdout.buffer
header = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
position = 0
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
        continue
    pyc = header + importlib.util.source_hash(source) + marshal.dumps(code)
    encoded = path.encode()
    out.write(len(encoded).to_bytes(4, "little") + len(pyc).to_bytes(8, "little") + encoded + pyc)
"""


def can_compile_for(python_version: str) -> bool:
    return f"{sys.version_info.major}.{sys.version_info.minor}" == python_version


def cache_path(path: str) -> str:
    """`usr/lib/x/mod.py` -> `usr/lib/x/__pycache__/mod.cpython-311.pyc`."""
    directory, _, name = path.rpartition("/")
    tag = sys.implementation.cache_tag
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


def _unframe(data: bytes) -> list[tuple[str, bytes]]:
    items = []
    position = 0
    while position < len(data):
        path_len = int.from_bytes(data[position : position + 4], "little")
        payload_len = int.from_bytes(data[position + 4 : position + 12], "little")
        position += 12
        path = data[position : position + path_len].decode()
        position += path_len
        items.append((path, data[position : position + payload_len]))
        position += payload_len
    return items


_ONE_AT_A_TIME = threading.Lock()

# (image path of a .py, its source) -> its .pyc, for one build: the second platform of an image,
# and any archive holding the same files, compiles nothing.
Shared = dict[tuple[str, bytes], bytes]


def compile_all(
    sources: Iterable[tuple[str, bytes]], shared: Shared | None = None
) -> list[tuple[str, bytes]]:
    """(image path of a .py, its source) -> (image path of its .pyc, the bytes), sorted.

    One call at a time: each already uses every core, and a second platform waiting finds the
    first's bytecode in `shared`.
    """
    sources = sorted(sources)
    with _ONE_AT_A_TIME:
        known = shared if shared is not None else {}
        pending = [item for item in sources if item not in known]
        by_pyc = {cache_path(path): (path, source) for path, source in pending}
        for pyc_path, data in _compile(pending):
            known[by_pyc[pyc_path]] = data
        compiled = [(path, source) for path, source in sources if (path, source) in known]
        return sorted((cache_path(path), known[(path, source)]) for path, source in compiled)


def _compile(ordered: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    if not ordered:
        return []
    workers = max(1, min(os.cpu_count() or 1, len(ordered) // 50 or 1))
    processes = []
    for index in range(workers):
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        processes.append((process, _frames(ordered[index::workers])))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(lambda job: (job[0], *job[0].communicate(job[1])), processes))
    results: list[tuple[str, bytes]] = []
    for process, stdout, stderr in outcomes:
        if process.returncode != 0:
            msg = f"compiling bytecode failed: {stderr.decode(errors='replace').strip()}"
            raise BuildError(msg)
        results += [(cache_path(path), pyc) for path, pyc in _unframe(stdout)]
    return sorted(results)
