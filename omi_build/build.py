"""The build pipeline: a selection's targets into OCI image layouts, one image per platform.

    lock (resolve if stale) -> downloads -> layers (unpack, bytecode, tar) -> image -> layout

Everything a target's platforms share is built once: the downloads, the layer builder (and the
layers two platforms have in common), the serving config. Platforms build side by side.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omi_build import (
    atomic,
    describe,
    image,
    layers,
    policy,
    registry,
    sbom,
    serving_config,
    settings,
    uptodate,
    workspace,
)
from omi_build import lock as locking
from omi_build.download import Downloads
from omi_build.errors import BuildError, LockError, ModelSignatureError, OmiError
from omi_build.image import PlatformImage
from omi_build.image.layout import Layout
from omi_build.layers import LayerBuilder
from omi_build.lock import Lock
from omi_build.manifest import Manifest
from omi_build.outcome import BuiltImage, BuiltTarget
from omi_build.platforms import host_platform
from omi_build.progress import Progress
from omi_build.registry.cache import RemoteLayers
from omi_build.store import Store
from omi_build.uptodate import output_dir

__all__ = ["BuiltImage", "BuiltTarget", "Options", "output_dir", "run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    target: str | None = None
    platform: str | None = None
    output: Path | None = None
    locked: bool = False
    docker_archive: Path | None = None
    policy_only: bool = False  # check the security policy (layers built into the cache), write no output
    cache_repo: str | None = None  # a registry repository shared by runners as a layer cache
    insecure_registries: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Target:
    """Everything one target's platforms share while their images are built."""

    manifest: Manifest
    lock: Lock
    name: str
    store: Store
    downloads: Downloads
    builder: LayerBuilder
    files: layers.ModelFiles
    config: bytes
    epoch: int
    progress: Progress

    def download(self, platform: str) -> None:
        """Ask for every locked file of `platform` the store lacks, largest first (they take
        longest to download and to unpack), and unpack each for the layers to build as it
        arrives. Debian's first: the package index is slow to say where the wheels are."""
        entry, uid = self.lock.platform(self.name, platform), self.manifest.security.user
        locking.build_sources(
            self.manifest, self.store, target=self.name, platform=platform, wheels=entry.wheels,
            progress=self.progress,
        )  # fmt: skip
        # Only what the layers still to build hold: a layer built before (here, or by another
        # runner that shared it through the cache repo) needs none of its packages.
        debian, wheels_needed = self.builder.needed(debian=entry.debian, wheels=entry.wheels, uid=uid)
        debs = sorted((p for p in debian if not self.store.has(p.sha256)), key=lambda p: -p.size)
        wheels = sorted((w for w in wheels_needed if not self.store.has(w.sha256)), key=lambda w: -w.size)
        if debs or wheels:
            self.progress.step(f"download {len(debs) + len(wheels)} files for {self.name} {platform}")
        self.downloads.request(locking.deb_sources(self.manifest, debs))
        self.builder.unpack_on_arrival(debian=debian, uid=uid)
        self.downloads.request(
            locking.wheel_sources(self.manifest, target=self.name, platform=platform, wheels=wheels)
        )
        self.builder.unpack_on_arrival(wheels=wheels_needed)

    def image(self, platform: str) -> PlatformImage:
        manifest, builder = self.manifest, self.builder
        entry = self.lock.platform(self.name, platform)
        uid = manifest.security.user
        try:
            self.download(platform)
            # Layers are independent: build them side by side, stack them in order.
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                base = pool.submit(builder.debian, list(entry.debian), uid=uid)
                packages = pool.submit(builder.wheels, list(entry.wheels))
                runtime = pool.submit(builder.runtime)
                model = pool.submit(
                    builder.model,
                    manifest.directory,
                    self.files,
                    self.config,
                    uid=uid,
                    allow_links=manifest.model.allow_links,
                )
                stack = [base.result(), *packages.result(), runtime.result(), *model.result()]
        except BaseException:
            self.downloads.cancel()  # the other platform may wait for this one's downloads
            raise
        return image.assemble(
            manifest,
            platform,
            stack,
            python=manifest.python.version,
            epoch=self.epoch,
            entry_args=["serve", "/" + layers.CONFIG_PATH],
            target=self.name,
        )


def _current_lock(manifest: Manifest, store: Store, *, locked: bool, progress: Progress) -> Lock:
    try:
        return locking.check(manifest)
    except LockError:
        if locked:
            raise
        progress.step(f"resolve {locking.lock_path(manifest)}")
        current = locking.resolve(manifest, store, progress)
        locking.write(manifest, current)
        return current


def run(
    store: Store, selections: list[workspace.Selection], options: Options, progress: Progress
) -> list[BuiltTarget]:
    """Build each selected target (the store's whole-cache lock is the caller's to hold)."""
    chosen = [(s, t) for s in selections for t in s.targets if options.target in (None, t)]
    if not chosen:
        msg = f"no target '{options.target}' in the selection"
        raise BuildError(msg, hint="'omi-build query' lists the targets")
    remote, client = None, None
    if options.cache_repo:
        reference = registry.Reference.parse(options.cache_repo)
        client = registry.Client(
            reference, insecure=reference.registry in options.insecure_registries, progress=progress
        )
        remote = RemoteLayers(client, reference, store, progress)
    several = len(chosen) > 1

    made_with = _recorded_options(options)

    def package(work: list[tuple[workspace.Selection, str]]) -> list[BuiltTarget]:
        """One package's targets, in turn: they share its omi.lock, which a build may rewrite.
        A target that is up to date (another of the workspace changed) is answered at once."""
        answers = []
        for selection, target in work:
            directory = output_dir(selection, target, options.output, several)
            fresh = uptodate.fresh(store, selection, target, directory, made_with) if made_with else None
            if fresh is not None:
                progress.step(f"{fresh.label}: up to date")
            answers.append(fresh or _target(store, selection, target, directory, options, progress, remote))
        return answers

    by_package: dict[Path, list[tuple[workspace.Selection, str]]] = {}
    for selection, target in chosen:
        by_package.setdefault(selection.package.directory, []).append((selection, target))
    try:
        built = _side_by_side(package, list(by_package.values()))
    finally:
        if client is not None:
            client.close()
    if remote is not None:
        progress.step(f"cache repo {remote.name}: {remote.pulled} layers pulled, {remote.pushed} pushed")
    return built


# Packages of a workspace build side by side (sharing the cache, its layers built once), one
# per two cores, at most four: each build already compresses and hashes on every core, and on
# two cores side by side measured slower (8 models, warm: 3.3-3.8 s against 2.8 s in turn).
WORKSPACE_BUILDS = max(1, min(4, (os.cpu_count() or 1) // 2))


def _side_by_side(
    build: Callable[[list[tuple[workspace.Selection, str]]], list[BuiltTarget]],
    packages: list[list[tuple[workspace.Selection, str]]],
) -> list[BuiltTarget]:
    """Each package built by `build`, several at once, results in the order given. The first
    failure is raised once the builds already running have ended; none is started after it."""
    if len(packages) == 1 or WORKSPACE_BUILDS == 1:
        return [target for work in packages for target in build(work)]
    with ThreadPoolExecutor(
        max_workers=min(WORKSPACE_BUILDS, len(packages)), thread_name_prefix="package"
    ) as pool:
        futures = [pool.submit(build, work) for work in packages]
        try:
            return [target for future in futures for target in future.result()]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _target(  # noqa: PLR0917 - the pipeline's one call, argument per stage input
    store: Store,
    selection: workspace.Selection,
    target: str,
    directory: Path,
    options: Options,
    progress: Progress,
    remote: RemoteLayers | None = None,
) -> BuiltTarget:
    manifest = selection.manifest
    current = _current_lock(manifest, store, locked=options.locked, progress=progress)
    spec = manifest.target(target)
    platforms = [p for p in spec.platforms if options.platform in (None, p)]
    if not platforms:
        msg = f"target {target} is not built for {options.platform}"
        raise BuildError(msg, hint=f"its platforms are: {', '.join(spec.platforms)}")
    epoch = settings.source_date_epoch(manifest.build.source_date_epoch)
    allow_links = manifest.model.allow_links
    names = layers.model_file_names(manifest.directory, manifest.model.files, allow_links=allow_links)
    rules = policy.check_model(manifest, names, [(p, current.platform(target, p)) for p in platforms])
    if not options.policy_only:
        policy.enforce(rules)  # before any layer is built
    python_version = manifest.python.version
    host = host_platform() or ""
    interpreter = layers.interpreter_packages(
        python_version, {p: current.platform(target, p).debian for p in spec.platforms}
    )
    with (
        Downloads(store, progress) as downloads,
        LayerBuilder(
            store,
            downloads,
            compression=manifest.build.compression,
            epoch=epoch,
            python_version=python_version,
            progress=progress,
            interpreter=interpreter,
            remote=remote,
        ) as builder,
    ):
        # Each model file is read once at most: a big one that changed has its layer written
        # as it is hashed, unless the signature must be checked first.
        found = builder.model_files(
            manifest.directory, names, known=store.stats(manifest.directory), allow_links=allow_links,
            one_pass=manifest.model.signature is None,
        )  # fmt: skip
        digests = found.digests
        if manifest.model.signature is not None:
            _check_model_signature(manifest, digests)
        config = serving_config.render(
            serving_config.of(manifest, digests, model_dir="/" + layers.MODEL_DIR, target=target)
        )
        if host not in platforms:
            # The host's Python compiles the bytecode, downloaded only if a layer needs it.
            downloads.request(locking.deb_sources(manifest, interpreter), deferred=True)
        job = _Target(
            manifest=manifest, lock=current, name=target, store=store, downloads=downloads,
            builder=builder, files=found, config=config, epoch=epoch, progress=progress,
        )  # fmt: skip
        # Platforms build side by side: decompression, hashing and compression release the
        # GIL, and bytecode compiles in processes; layers they share are built once.
        with ThreadPoolExecutor(max_workers=len(platforms)) as pool:
            try:
                images = list(pool.map(job.image, platforms))
            except BaseException:  # Ctrl-C lands here: the platforms must not wait on downloads
                downloads.cancel()
                raise
        downloads.finish()  # a file no layer needed (its layer was cached) may still fail
    memo = _LicenceMemo(store, manifest)
    for built in images:
        rules += policy.check_image(manifest, built.platform, built.layers, memo.verdicts)
    memo.save()
    label = selection.package.label(target)
    if options.policy_only:
        return BuiltTarget(
            label=label, target=target, layout=directory, index="", images=(), policy=tuple(rules)
        )
    policy.enforce(rules)  # nothing is written to the output unless every rule holds
    attach = functools.partial(
        describe.attach, images=images, manifest=manifest, lock=current, target=target, label=label,
        digests=digests, epoch=epoch,
    )  # fmt: skip
    index_digest = _write_output(
        directory, store, images, labels=image.oci_annotations(manifest, epoch, target=target),
        tag=manifest.metadata.version, attach=attach, progress=progress,
    )  # fmt: skip
    memo.save()
    if options.docker_archive is not None:
        repo_tag = f"{manifest.metadata.name}:{manifest.metadata.version}"
        image.write_docker_archive(
            options.docker_archive, directory, images[0], repo_tag=repo_tag, epoch=epoch
        )
    answer = BuiltTarget(
        label=label,
        target=target,
        layout=directory,
        index=index_digest,
        images=tuple(
            BuiltImage(
                label=label,
                target=target,
                platform=built.platform,
                digest=built.digest,
                index=index_digest,
                layout=directory,
                size=sum(layer.blob.uncompressed_size for layer in built.layers),
                compressed_size=sum(layer.blob.size for layer in built.layers),
            )
            for built in images
        ),
        policy=tuple(rules),
    )
    if made_with := _recorded_options(options):
        # The next build with the same inputs and an untouched output answers this at once.
        uptodate.remember(store, selection, target, directory, made_with, digests, answer)
    return answer


def _recorded_options(options: Options) -> dict[str, Any] | None:
    """The options an up-to-date record depends on; None for builds that do more than write
    the layout (a docker archive, a cache repo to fill) or write none (policy only)."""
    if options.docker_archive is not None or options.cache_repo is not None or options.policy_only:
        return None
    return uptodate.options_of(options.platform, options.locked)


def _write_output(
    directory: Path,
    store: Store,
    images: list[PlatformImage],
    *,
    labels: dict[str, str],
    tag: str,
    attach: Callable[[Layout], None],
    progress: Progress,
) -> str:
    """The layout, what `attach` adds to it (SBOMs, statements), and nothing an earlier build
    left that its index no longer names; the index digest. One writer at a time in a folder."""
    with image.writing(directory):
        index_digest = image.write_layout(directory, store, images, labels=labels, tag=tag)
        written = Layout.open(directory)
        attach(written)
        written.close()  # its reader's lock would keep the prune from running
        removed, freed = image.prune_unreferenced(directory)
    if removed:
        progress.step(f"removed {removed} blobs ({freed / 1e6:.1f} MB) the index no longer names")
    return index_digest


class _LicenceMemo:
    """What SPDX parsing found in earlier builds, kept in the cache: building the parser and
    parsing every package's licences took most of a no-op build's time."""

    def __init__(self, store: Store, manifest: Manifest) -> None:
        stats = store.folder("stats")
        self._verdicts_path = stats / f"licenses-{policy.licenses_key(manifest)}.json"
        self._ids_path = stats / f"spdx-{policy.licenses_key(None)}.json"
        self.verdicts = self._read(self._verdicts_path)
        sbom.preload(self._read(self._ids_path))
        self._sizes = (len(self.verdicts), len(sbom.known_ids()))

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def save(self) -> None:
        """Write what this build learned (a memo that cannot be written only costs time)."""
        sizes = (len(self.verdicts), len(sbom.known_ids()))
        with contextlib.suppress(OSError):
            self._verdicts_path.parent.mkdir(parents=True, exist_ok=True)
            if sizes[0] != self._sizes[0]:
                atomic.write_text(self._verdicts_path, json.dumps(self.verdicts, sort_keys=True))
            if sizes[1] != self._sizes[1]:
                atomic.write_text(self._ids_path, json.dumps(sbom.known_ids(), sort_keys=True))
        self._sizes = sizes


def _check_model_signature(manifest: Manifest, digests: dict[str, str]) -> None:
    """The model files are the ones their trainer signed (model.signature), before anything is built."""
    from omi_build.sign import keyless, keys, models  # noqa: PLC0415 - only models that carry one

    wanted = manifest.model.signature
    assert wanted is not None  # noqa: S101 - the caller checked
    base = manifest.directory
    try:
        signature = (base / wanted.file).read_bytes()
        key = keys.PublicKey.from_pem((base / wanted.public_key).read_bytes()) if wanted.public_key else None
    except OSError as exc:
        msg = f"cannot read {exc.filename}: {exc.strerror}"
        raise ModelSignatureError(msg, hint="model.signature names files relative to omi.yaml") from exc
    identity = (
        keyless.Identity(identity=wanted.keyless.identity, issuer=wanted.keyless.issuer)
        if wanted.keyless
        else None
    )
    files = {path: sha.removeprefix("sha256:") for path, sha in digests.items() if path != wanted.file}
    try:
        signed = models.signed_files(signature, key=key, identity=identity, what=wanted.file)
        models.check_files(base, signed, files)
    except OmiError as exc:
        msg = f"{manifest.path}: model.signature: {exc}"
        raise ModelSignatureError(msg, hint=exc.hint or "have the model signed again") from exc
