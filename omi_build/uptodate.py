"""A target whose inputs and output are as its last build left them is up to date: nothing is
read, built or written, and the pipeline is not even imported.

The last successful build of each output records what it was made of (a digest of the
manifest, the lock, every model file's digest, the options, the OMI_* environment and the
builder itself) and the stat of every file it left in the output. A build whose inputs give the
same record, and whose output files all have the stat recorded, answers with what that build
answered. Model files are known by the stat cache (store.StatCache), never read here; any
change, a file touched, a blob removed or a signature attached, sends the build down the whole
pipeline, which is itself a no-op when nothing really changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from omi_build import __version__, atomic, workspace
from omi_build.digests import canonical, digest_of
from omi_build.errors import OmiError
from omi_build.manifest import files
from omi_build.outcome import BuiltImage, BuiltTarget, Result
from omi_build.store import Store

FORMAT = 1  # bump when a record of this format would mean something else
_BUILDER = Path(__file__).resolve().parent


def output_dir(selection: workspace.Selection, target: str, output: Path | None, several: bool) -> Path:
    if output is not None:
        return output / selection.package.name / target if several else output
    return selection.package.root / "omi-out" / selection.package.name / target


@cache
def _builder() -> str:
    """omi-build itself: its version and the stat of every file of the package (a source edited
    in a checkout is another builder)."""
    entries = []
    for path in sorted(_BUILDER.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        st = path.stat()
        entries.append([path.relative_to(_BUILDER).as_posix(), st.st_size, st.st_mtime_ns])
    return digest_of(canonical([__version__, entries]))


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def model_digests(selection: workspace.Selection, store: Store) -> dict[str, str] | None:
    """Every model file's digest as the stat cache knows it; None if one is unknown (changed,
    new, or refused: the pipeline reports it)."""
    manifest = selection.manifest
    allow_links = manifest.model.allow_links
    known = store.stats(manifest.directory)
    chosen = files.select(manifest.directory, manifest.model.files, allow_links=allow_links)
    if chosen.refused:
        return None
    found = {}
    for relative in chosen.files:
        try:
            with files.open_inside(manifest.directory, relative, allow_links=allow_links) as stream:
                digest = known.known(relative, os.fstat(stream.fileno()))
        except (OmiError, OSError):
            return None
        if digest is None:
            return None
        found[relative] = "sha256:" + digest
    return found


def _inputs(
    selection: workspace.Selection,
    target: str,
    directory: Path,
    options: dict[str, Any],
    digests: dict[str, str],
) -> str:
    manifest = selection.manifest
    signature = manifest.model.signature
    signed = [] if signature is None else [signature.file, signature.public_key or ""]
    return digest_of(
        canonical(
            {
                "format": FORMAT,
                "builder": _builder(),
                "manifest": _sha(manifest.path),
                "lock": _sha(manifest.directory / "omi.lock"),
                "signature": [_sha(manifest.directory / name) if name else None for name in signed],
                "label": selection.package.label(target),
                "output": str(directory.resolve()),
                "options": options,
                "files": digests,
                "environment": sorted(
                    (key, value)
                    for key, value in os.environ.items()
                    if key.startswith("OMI_") or key == "SOURCE_DATE_EPOCH"
                ),
            }
        )
    )


def _outputs(directory: Path) -> dict[str, list[int]]:
    """The stat of every file the build left: the layout's and those written beside it."""
    paths = [directory / "oci-layout", directory / "index.json"]
    with contextlib.suppress(OSError):
        paths += sorted((directory / "blobs" / "sha256").iterdir())
    paths += sorted(directory.parent.glob(glob.escape(directory.name) + ".*"))
    found = {}
    for path in paths:
        st = path.lstat()
        found[str(path)] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return found


def _record_path(store: Store, directory: Path) -> Path:
    return (
        store.folder("stats")
        / f"build-{hashlib.sha256(os.fsencode(directory.resolve())).hexdigest()[:32]}.json"
    )


def fresh(
    store: Store, selection: workspace.Selection, target: str, directory: Path, options: dict[str, Any]
) -> BuiltTarget | None:
    """What the last build of this output answered, if nothing it was made of has changed."""
    try:
        raw = json.loads(_record_path(store, directory).read_text(encoding="utf-8"))
        digests = model_digests(selection, store)
        if digests is None or raw["inputs"] != _inputs(selection, target, directory, options, digests):
            return None
        if _outputs(directory) != raw["outputs"]:
            return None
        return _built_of(raw["built"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record, a damaged one, or an output file gone: the pipeline decides


def remember(  # noqa: PLR0917 - what the record is made of, in the order fresh() reads it
    store: Store,
    selection: workspace.Selection,
    target: str,
    directory: Path,
    options: dict[str, Any],
    digests: dict[str, str],
    built: BuiltTarget,
) -> None:
    """Record a build that just wrote `directory` (a record that cannot be written costs time only)."""
    with contextlib.suppress(OSError):
        record = {
            "inputs": _inputs(selection, target, directory, options, digests),
            "outputs": _outputs(directory),
            "built": _json_of(built),
        }
        path = _record_path(store, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, json.dumps(record, sort_keys=True))


def _json_of(built: BuiltTarget) -> dict[str, Any]:
    raw = dataclasses.asdict(built)
    raw["layout"] = str(built.layout)
    raw["images"] = [{**dataclasses.asdict(image), "layout": str(image.layout)} for image in built.images]
    return raw


def _built_of(raw: dict[str, Any]) -> BuiltTarget:
    return BuiltTarget(
        label=str(raw["label"]),
        target=str(raw["target"]),
        layout=Path(raw["layout"]),
        index=str(raw["index"]),
        images=tuple(BuiltImage(**{**image, "layout": Path(image["layout"])}) for image in raw["images"]),
        policy=tuple(Result(**{**rule, "offending": tuple(rule["offending"])}) for rule in raw["policy"]),
    )


def options_of(platform: str | None, locked: bool) -> dict[str, Any]:
    """The build options a record depends on (the target is in its label)."""
    return {"platform": platform, "locked": locked}


def all_fresh(
    store: Store,
    selections: list[workspace.Selection],
    *,
    target: str | None,
    platform: str | None,
    output: Path | None,
    locked: bool,
) -> list[BuiltTarget] | None:
    """Every chosen target's last answer if all are up to date, else None (build them)."""
    chosen = [(s, t) for s in selections for t in s.targets if target in (None, t)]
    several = len(chosen) > 1
    answers = []
    for selection, name in chosen:
        directory = output_dir(selection, name, output, several)
        answer = fresh(store, selection, name, directory, options_of(platform, locked))
        if answer is None:
            return None
        answers.append(answer)
    return answers or None
