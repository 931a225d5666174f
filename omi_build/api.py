"""The public façade: each verb runs one or more pipeline stages. The CLI only renders.

>>> from omi_build import api
>>> [m.metadata.name for m in api.validate(["examples/iris-sklearn"])]
['iris-classifier']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omi_build import scaffold, workspace
from omi_build.errors import BuildError, Issue, ManifestError, SecurityUpdatesError
from omi_build.manifest import Manifest, load
from omi_build.progress import Progress, Silent

if TYPE_CHECKING:  # imported for annotations only: each costs start-up time in the CLI
    from omi_build.build import BuiltTarget
    from omi_build.cache import Usage
    from omi_build.engine import Running
    from omi_build.examples import Outcome


def validate(arguments: Iterable[str], cwd: Path | None = None) -> list[Manifest]:
    """Load every manifest that paths or labels name; raise one ManifestError with all issues."""
    manifests: list[Manifest] = []
    issues: list[Issue] = []
    for package in workspace.packages(arguments, cwd):
        try:
            manifests.append(load(package.directory))
        except ManifestError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ManifestError(issues)
    return manifests


def query(arguments: Iterable[str], cwd: Path | None = None) -> list[workspace.Selection]:
    """The targets that labels select (default: every target in the workspace)."""
    wanted = list(arguments) or ["//..."]
    return workspace.resolve(wanted, cwd)


def init(directory: Path, *, force: bool = False) -> list[Path]:
    """Write a starter omi.yaml (and model.py, if missing); return the files written."""
    return scaffold.write(directory, force=force)


@dataclass(frozen=True, kw_only=True, slots=True)
class LockResult:
    path: Path
    changed: bool


def lock(
    arguments: Iterable[str],
    *,
    check: bool = False,
    security: bool = False,
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> list[LockResult]:
    """Write omi.lock for each package (or, with check, fail if one is missing or stale).

    With `security` too, also fail (SecurityUpdatesError, exit 3) when the configured Debian
    archives now ship a newer version of a locked package in -security or -updates.
    """
    from omi_build import lock as locking  # noqa: PLC0415 - keep CLI start-up light
    from omi_build import settings, store  # noqa: PLC0415

    results = []
    cache = store.Store(settings.cache_dir())
    for manifest in validate(arguments, cwd):
        if check:
            current = locking.check(manifest)
            if security:
                updates = locking.security_updates(manifest, current, cache, progress or Silent())
                if updates:
                    shown = "\n  ".join(str(update) for update in updates)
                    msg = (
                        f"{locking.lock_path(manifest)} pins {len(updates)} Debian package"
                        f"{'s' if len(updates) != 1 else ''} with a newer update:\n  {shown}"
                    )
                    raise SecurityUpdatesError(msg, hint="run 'omi-build lock' and commit the result")
            results.append(LockResult(path=locking.lock_path(manifest), changed=False))
            continue
        resolved = locking.resolve(manifest, cache, progress or Silent())
        path = locking.lock_path(manifest)
        before = path.read_text(encoding="utf-8") if path.is_file() else None
        locking.write(manifest, resolved)
        results.append(LockResult(path=path, changed=before != resolved.to_json()))
    return results


def build(
    arguments: Iterable[str],
    *,
    target: str | None = None,
    platform: str | None = None,
    output: Path | None = None,
    locked: bool = False,
    docker_archive: Path | None = None,
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> list[BuiltTarget]:
    """Build OCI image layouts (one per target, one image per platform) for the selection."""
    from omi_build import build as pipeline  # noqa: PLC0415
    from omi_build import settings, store  # noqa: PLC0415

    cache = store.Store(settings.cache_dir())
    options = pipeline.Options(
        target=target, platform=platform, output=output, locked=locked, docker_archive=docker_archive
    )
    with cache.in_use():  # `omi-build cache clean` waits for no build
        cache.sweep()
        selections = workspace.resolve(list(arguments), cwd, cache=cache.folder("manifests"))
        return pipeline.run(cache, selections, options, progress or Silent())


def _layout_for(argument: str, cwd: Path | None, progress: Progress | None) -> Path:
    """An OCI layout directory as given, or the one built for a label or package path."""
    candidate = Path(argument) if Path(argument).is_absolute() else (cwd or Path.cwd()) / argument
    if (candidate / "oci-layout").is_file():
        return candidate
    built = build([argument], cwd=cwd, progress=progress)
    if len(built) != 1:
        labels = ", ".join(sorted(target.label for target in built))
        msg = f"'{argument}' selects several targets ({labels})"
        raise BuildError(msg, hint="name one, e.g. //package:cpu")
    return built[0].layout


def run(
    argument: str,
    *,
    port: int | None = None,
    cwd: Path | None = None,
    progress: Progress | None = None,
    output: Any = None,
) -> Running:
    """Start the image of a layout or label on 127.0.0.1 (building it first if needed),
    on `port` or else the port the manifest set (serving.port)."""
    from omi_build import engine  # noqa: PLC0415

    layout = _layout_for(argument, cwd, progress)
    if port is None:
        port = int(engine.serving_config(layout)["serving"]["port"])
    return engine.start(layout, port=port, output=output)


def run_examples(
    argument: str,
    *,
    port: int,
    cwd: Path | None = None,
    progress: Progress | None = None,
    log: Any = None,
) -> list[Outcome]:
    """Run the image, send every example through every protocol, and stop it: the outcomes."""
    from omi_build import engine, examples  # noqa: PLC0415

    layout = _layout_for(argument, cwd, progress)
    config = engine.serving_config(layout)
    if not config["model"].get("examples"):
        msg = "the model declares no examples to test"
        raise BuildError(msg, hint="add model.examples to omi.yaml")
    with engine.start(layout, port=port, output=log) as server:
        engine.wait_serving(server)
        return examples.run(port, config)


def cache_usage() -> tuple[Path, list[Usage]]:
    """The cache folder and what it holds."""
    from omi_build import cache, settings, store  # noqa: PLC0415

    opened = store.Store(settings.cache_dir())
    return opened.root, cache.usage(opened)


def clean_cache(*, keep_downloads: bool = False) -> tuple[Path, int]:
    """Empty the cache (or keep the downloads); the folder and the bytes freed."""
    from omi_build import cache, settings, store  # noqa: PLC0415

    opened = store.Store(settings.cache_dir())
    return opened.root, cache.clean(opened, keep_downloads=keep_downloads)
