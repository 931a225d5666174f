"""The public façade: each verb runs one or more pipeline stages. The CLI only renders.

>>> from omi_build import api
>>> [m.metadata.name for m in api.validate(["examples/iris-sklearn"])]
['iris-classifier']
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omi_build import scaffold, workspace
from omi_build.errors import BuildError, Issue, LockError, ManifestError, SecurityUpdatesError
from omi_build.manifest import Manifest, load
from omi_build.progress import Progress, Silent

if TYPE_CHECKING:  # imported for annotations only: each costs start-up time in the CLI
    from omi_build.cache import Usage
    from omi_build.conformance import Outcome
    from omi_build.fetch import Store
    from omi_build.image import PlatformImage
    from omi_build.layers import LayerBuilder
    from omi_build.lock import DebPackage, Lock
    from omi_build.run import Running


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
    from omi_build import fetch, settings  # noqa: PLC0415 - keep CLI start-up light
    from omi_build import lock as locking  # noqa: PLC0415

    results = []
    store = fetch.Store(settings.cache_dir())
    for manifest in validate(arguments, cwd):
        if check:
            current = locking.check(manifest)
            if security:
                updates = locking.security_updates(manifest, current, store, progress or Silent())
                if updates:
                    shown = "\n  ".join(str(update) for update in updates)
                    msg = (
                        f"{locking.lock_path(manifest)} pins {len(updates)} Debian package"
                        f"{'s' if len(updates) != 1 else ''} with a newer update:\n  {shown}"
                    )
                    raise SecurityUpdatesError(msg, hint="run 'omi-build lock' and commit the result")
            results.append(LockResult(path=locking.lock_path(manifest), changed=False))
            continue
        resolved = locking.resolve(manifest, store, progress or Silent())
        path = locking.lock_path(manifest)
        before = path.read_text(encoding="utf-8") if path.is_file() else None
        locking.write(manifest, resolved)
        results.append(LockResult(path=path, changed=before != resolved.to_json()))
    return results


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltImage:
    label: str
    target: str
    platform: str
    digest: str
    index: str
    layout: Path
    size: int
    compressed_size: int


@dataclass(frozen=True, kw_only=True)
class _PlatformJob:
    """Everything one target's platforms share while their images are built."""

    manifest: Manifest
    lock: Lock
    target: str
    store: Store
    builder: LayerBuilder
    digests: dict[str, str]
    config: bytes
    epoch: int
    progress: Progress

    def image(self, platform: str) -> PlatformImage:
        from omi_build import image, layers  # noqa: PLC0415
        from omi_build import lock as locking  # noqa: PLC0415

        manifest, store, builder = self.manifest, self.store, self.builder
        entry = self.lock.platform(self.target, platform)
        uid = manifest.security.user
        # Unpack each archive of a layer still to build as soon as it is downloaded.
        pending = builder.archives_to_unpack(list(entry.debian), list(entry.wheels), uid=uid)
        wanted = {a.sha256: a for a in pending}

        def fetched(digest: str) -> None:
            builder.unpacker.arrived(digest)
            if digest in wanted:
                builder.unpacker.prefetch(wanted[digest])

        try:
            locking.fetch(
                manifest, target=self.target, platform=platform, entry=entry, store=store,
                progress=self.progress, on_fetched=fetched,
            )  # fmt: skip
            # Layers are independent: build them side by side, stack them in order.
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                base = pool.submit(builder.debian, list(entry.debian), uid=uid)
                packages = pool.submit(builder.wheels, list(entry.wheels))
                runtime = pool.submit(builder.runtime)
                model = pool.submit(
                    builder.model,
                    manifest.directory,
                    self.digests,
                    self.config,
                    uid=uid,
                    allow_links=manifest.model.allow_links,
                )
                stack = [base.result(), *packages.result(), runtime.result(), *model.result()]
        except BaseException:
            builder.unpacker.stop()  # the other platform may wait for this one's downloads
            raise
        return image.assemble(
            manifest,
            platform,
            stack,
            python=manifest.python.version,
            epoch=self.epoch,
            entry_args=["serve", "/" + layers.CONFIG_PATH],
        )


def _fetch_packages(  # noqa: PLR0917 - a partial application: fixed arguments, then the callback
    manifest: Manifest,
    target: str,
    platform: str,
    packages: tuple[DebPackage, ...],
    store: Store,
    progress: Progress,
    arrived: Callable[[str], None],
) -> None:
    """Download Debian packages of a platform this build does not build."""
    from omi_build import lock as locking  # noqa: PLC0415

    locking.fetch(
        manifest, target=target, platform=platform, store=store, progress=progress,
        entry=locking.PlatformLock(debian=packages, wheels=()), on_fetched=arrived,
    )  # fmt: skip


def _output_dir(selection: workspace.Selection, target: str, output: Path | None, several: bool) -> Path:
    if output is not None:
        return output / selection.package.name / target if several else output
    return selection.package.root / "omi-out" / selection.package.name / target


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
) -> list[BuiltImage]:
    """Build OCI image layouts (one per target, one image per platform) for the selection."""
    from omi_build import fetch, settings  # noqa: PLC0415

    store = fetch.Store(settings.cache_dir())
    with store.in_use():  # `omi-build cache clean` waits for no build
        store.sweep()
        return _build(
            store, list(arguments), target=target, platform=platform, output=output, locked=locked,
            docker_archive=docker_archive, cwd=cwd, progress=progress or Silent(),
        )  # fmt: skip


def _build(
    store: Store,
    arguments: list[str],
    *,
    target: str | None,
    platform: str | None,
    output: Path | None,
    locked: bool,
    docker_archive: Path | None,
    cwd: Path | None,
    progress: Progress,
) -> list[BuiltImage]:
    from omi_build import codegen, image, layers, settings  # noqa: PLC0415
    from omi_build import lock as locking  # noqa: PLC0415
    from omi_build.platforms import host_platform  # noqa: PLC0415

    selections = workspace.resolve(arguments, cwd, cache=settings.cache_dir())
    chosen = [(s, t) for s in selections for t in s.targets if target in (None, t)]
    if not chosen:
        msg = f"no target '{target}' in the selection"
        raise BuildError(msg, hint="'omi-build query' lists the targets")
    built: list[BuiltImage] = []
    for selection, target_name in chosen:
        manifest = selection.manifest
        try:
            current = locking.check(manifest)
        except LockError:
            if locked:
                raise
            progress.step(f"resolve {locking.lock_path(manifest)}")
            current = locking.resolve(manifest, store, progress)
            locking.write(manifest, current)
        spec = manifest.target(target_name)
        platforms = [p for p in spec.platforms if platform in (None, p)]
        if not platforms:
            msg = f"target {target_name} is not built for {platform}"
            raise BuildError(msg, hint=f"its platforms are: {', '.join(spec.platforms)}")
        epoch = settings.source_date_epoch(manifest.build.source_date_epoch)
        digests = layers.model_file_digests(
            manifest.directory, manifest.model.files, allow_links=manifest.model.allow_links
        )
        config = codegen.render(codegen.serving_config(manifest, digests, model_dir="/" + layers.MODEL_DIR))
        python_version = manifest.python.version
        host = host_platform() or ""
        interpreter = layers.interpreter_packages(
            python_version, {p: current.platform(target_name, p).debian for p in spec.platforms}
        )

        with layers.LayerBuilder(
            store,
            compression=manifest.build.compression,
            epoch=epoch,
            python_version=python_version,
            progress=progress,
            interpreter=interpreter,
            fetch_interpreter=None
            if host in platforms
            else functools.partial(
                _fetch_packages, manifest, target_name, host, tuple(interpreter), store, progress
            ),
        ) as builder:
            job = _PlatformJob(
                manifest=manifest, lock=current, target=target_name, store=store, builder=builder,
                digests=digests, config=config, epoch=epoch, progress=progress,
            )  # fmt: skip
            # Platforms build side by side: decompression, hashing and compression release the
            # GIL, and bytecode compiles in processes; layers they share are built once.
            with ThreadPoolExecutor(max_workers=len(platforms)) as pool:
                images = list(pool.map(job.image, platforms))
        directory = _output_dir(selection, target_name, output, len(chosen) > 1)
        labels = image.oci_annotations(manifest, epoch)
        index_digest = image.write_layout(
            directory, store, images, labels=labels, tag=manifest.metadata.version
        )
        for built_image in images:
            built.append(
                BuiltImage(
                    label=selection.package.label(target_name),
                    target=target_name,
                    platform=built_image.platform,
                    digest=built_image.digest,
                    index=index_digest,
                    layout=directory,
                    size=sum(layer.blob.uncompressed_size for layer in built_image.layers),
                    compressed_size=sum(layer.blob.size for layer in built_image.layers),
                )
            )
        if docker_archive is not None:
            first = images[0]
            repo_tag = f"{manifest.metadata.name}:{manifest.metadata.version}"
            image.write_docker_archive(docker_archive, directory, first, repo_tag=repo_tag, epoch=epoch)
    return built


def _layout_for(argument: str, cwd: Path | None, progress: Progress | None) -> Path:
    """An OCI layout directory as given, or the one built for a label or package path."""
    candidate = Path(argument) if Path(argument).is_absolute() else (cwd or Path.cwd()) / argument
    if (candidate / "oci-layout").is_file():
        return candidate
    built = build([argument], cwd=cwd, progress=progress)
    layouts = list(dict.fromkeys(image.layout for image in built))
    if len(layouts) != 1:
        labels = ", ".join(sorted({image.label for image in built}))
        msg = f"'{argument}' selects several targets ({labels})"
        raise BuildError(msg, hint="name one, e.g. //package:cpu")
    return layouts[0]


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
    from omi_build import run as running  # noqa: PLC0415

    layout = _layout_for(argument, cwd, progress)
    if port is None:
        port = int(running.serving_config(layout)["serving"]["port"])
    return running.start(layout, port=port, output=output)


def run_examples(
    argument: str,
    *,
    port: int,
    cwd: Path | None = None,
    progress: Progress | None = None,
    log: Any = None,
) -> list[Outcome]:
    """Run the image, send every example through every protocol, and stop it: the outcomes."""
    from omi_build import conformance  # noqa: PLC0415
    from omi_build import run as running  # noqa: PLC0415

    layout = _layout_for(argument, cwd, progress)
    config = running.serving_config(layout)
    if not config["model"].get("examples"):
        msg = "the model declares no examples to test"
        raise BuildError(msg, hint="add model.examples to omi.yaml")
    with running.start(layout, port=port, output=log) as server:
        running.wait_serving(server)
        return conformance.run_examples(port, config)


def cache_usage() -> tuple[Path, list[Usage]]:
    """The cache folder and what it holds."""
    from omi_build import cache, fetch, settings  # noqa: PLC0415

    store = fetch.Store(settings.cache_dir())
    return store.root, cache.usage(store)


def clean_cache(*, keep_downloads: bool = False) -> tuple[Path, int]:
    """Empty the cache (or keep the downloads); the folder and the bytes freed."""
    from omi_build import cache, fetch, settings  # noqa: PLC0415

    store = fetch.Store(settings.cache_dir())
    return store.root, cache.clean(store, keep_downloads=keep_downloads)
