"""The public façade: each verb runs one or more pipeline stages. The CLI only renders.

>>> from omi_build import api
>>> [m.metadata.name for m in api.validate(["examples/iris-sklearn"])]
['iris-classifier']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omi_build import scaffold, workspace
from omi_build.errors import BuildError, Issue, ManifestError, SecurityUpdatesError
from omi_build.manifest import Manifest, load
from omi_build.progress import Progress, Silent

if TYPE_CHECKING:  # imported for annotations only: each costs start-up time in the CLI
    from omi_build.cache import Usage
    from omi_build.engine import Running
    from omi_build.examples import Outcome
    from omi_build.image.layout import Layout
    from omi_build.outcome import BuiltTarget
    from omi_build.push import Pulled, Pushed
    from omi_build.registry import Client, Reference


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
    cache_repo: str | None = None,
    insecure_registries: Iterable[str] = (),
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> list[BuiltTarget]:
    """Build OCI image layouts (one per target, one image per platform) for the selection;
    with `cache_repo`, layers are shared with other machines through that registry repository."""
    from omi_build import settings, store, uptodate  # noqa: PLC0415

    cache = store.Store(settings.cache_dir())
    progress = progress or Silent()
    with cache.in_use():  # `omi-build cache clean` waits for no build
        cache.sweep()
        selections = workspace.resolve(list(arguments), cwd, cache=cache.folder("manifests"))
        if docker_archive is None and cache_repo is None:
            fresh = uptodate.all_fresh(
                cache, selections, target=target, platform=platform, output=output, locked=locked
            )
            if fresh is not None:  # nothing changed: the pipeline is not even loaded
                for built in fresh:
                    progress.step(f"{built.label}: up to date (nothing changed since it was built)")
                return fresh
        from omi_build import build as pipeline  # noqa: PLC0415

        options = pipeline.Options(
            target=target, platform=platform, output=output, locked=locked, docker_archive=docker_archive,
            cache_repo=cache_repo, insecure_registries=tuple(insecure_registries),
        )  # fmt: skip
        return pipeline.run(cache, selections, options, progress)


def _client(reference: Reference, insecure_registries: Iterable[str], progress: Progress | None) -> Client:
    from omi_build.registry import Client  # noqa: PLC0415

    return Client(reference, insecure=reference.registry in set(insecure_registries), progress=progress)


def push(
    argument: str,
    destination: str,
    *,
    force: bool = False,
    insecure_registries: Iterable[str] = (),
    mount_from: Iterable[str] = (),
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> Pushed:
    """Push a layout (or a label's image, built first if needed) with every referrer to
    `destination` (host/repository[:tag]; the tag defaults to the image's version)."""
    from omi_build import push as pushing  # noqa: PLC0415
    from omi_build.image.layout import Layout  # noqa: PLC0415
    from omi_build.registry import Reference  # noqa: PLC0415

    reference = Reference.parse(destination)
    layout = Layout.open(_layout_for(argument, cwd, progress))
    sources = tuple(
        other.repository for other in map(Reference.parse, mount_from) if other.registry == reference.registry
    )
    with _client(reference, insecure_registries, progress) as client:
        return pushing.push(layout, reference, client, force=force, mount_from=sources)


def push_built(
    built: list[BuiltTarget],
    destination: str,
    *,
    force: bool = False,
    insecure_registries: Iterable[str] = (),
    mount_from: Iterable[str] = (),
    progress: Progress | None = None,
) -> list[Pushed]:
    """`build --push`: each built target to `destination`; with several targets each gets the
    tag <version>-<target>, as one tag cannot name them all."""
    from omi_build.registry import Reference  # noqa: PLC0415

    reference = Reference.parse(destination)
    if len(built) > 1 and reference.tag:
        msg = f"--push {destination} names one tag for {len(built)} targets"
        raise BuildError(msg, hint="push to host/repository: each target is tagged <version>-<target>")
    pushed = []
    for target in built:
        where = destination
        if len(built) > 1:
            from omi_build.image.layout import Layout  # noqa: PLC0415

            version = Layout.open(target.layout).tags()[0]
            where = str(reference.with_tag(f"{version}-{target.target}"))
        pushed.append(
            push(str(target.layout), where, force=force, insecure_registries=insecure_registries,
                 mount_from=mount_from, progress=progress)
        )  # fmt: skip
    return pushed


def pull(
    source: str, directory: Path, *, insecure_registries: Iterable[str] = (), progress: Progress | None = None
) -> Pulled:
    """Pull an image (every platform, every referrer) into an OCI layout at `directory`."""
    from omi_build import push as pushing  # noqa: PLC0415
    from omi_build.registry import Reference  # noqa: PLC0415

    reference = Reference.parse(source)
    created = not directory.exists()
    try:
        with _client(reference, insecure_registries, progress) as client:
            return pushing.pull(client, reference, directory)
    except BaseException:
        if created:  # a failed pull into a new folder leaves nothing behind
            import shutil  # noqa: PLC0415

            shutil.rmtree(directory, ignore_errors=True)
        raise


def load_image(
    argument: str,
    *,
    into: str = "auto",
    name: str | None = None,
    platform: str | None = None,
    storage_driver: str | None = None,
    root: Path | None = None,
    runroot: Path | None = None,
    insecure_registries: Iterable[str] = (),
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> str:
    """Load one platform's image (of a layout, a label, or a registry reference) into a docker
    engine or containers-storage, for docker, podman or buildah to run; where it went."""
    import tempfile  # noqa: PLC0415

    from omi_build import engine  # noqa: PLC0415
    from omi_build.image.layout import REF_NAME, Layout  # noqa: PLC0415
    from omi_build.platforms import arch_of, host_platform  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="omi-load-") as scratch:
        if _is_reference(argument, cwd):
            layout_dir = Path(scratch) / "layout"
            pulled = pull(argument, layout_dir, insecure_registries=insecure_registries, progress=progress)
            default_name = pulled.reference.split("@", 1)[0]
        else:
            layout_dir = _layout_for(argument, cwd, progress)
            index = Layout.open(layout_dir).target_index()
            title = index.annotations.get(REF_NAME, "latest")
            labels = Layout.open(layout_dir).json_blob(index.digest).get("annotations", {})
            default_name = f"{labels.get('org.opencontainers.image.title', 'omi-model')}:{title}"
        arch = arch_of(platform or host_platform() or "linux/amd64")
        return engine.load(
            layout_dir, arch=arch, name=name or default_name, into=into,
            storage_driver=storage_driver, root=root, runroot=runroot,
        )  # fmt: skip


def policy(
    arguments: Iterable[str],
    *,
    target: str | None = None,
    platform: str | None = None,
    locked: bool = False,
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> list[BuiltTarget]:
    """Check the security policy of the selection's targets, rule by rule: the layers are built
    into the cache (what the rules read), the output is not written. Each target's `policy`
    holds every rule's result, passed or not."""
    from omi_build import build as pipeline  # noqa: PLC0415
    from omi_build import settings, store  # noqa: PLC0415

    cache = store.Store(settings.cache_dir())
    options = pipeline.Options(target=target, platform=platform, locked=locked, policy_only=True)
    with cache.in_use():
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
    platform: str | None = None,
    cwd: Path | None = None,
    progress: Progress | None = None,
    output: Any = None,
) -> Running:
    """Start the image of a layout or label on 127.0.0.1 (building it first if needed),
    on `port` or else the port the manifest set (serving.port); `platform`'s image (default:
    this machine's), under qemu-user when it is another's."""
    from omi_build import engine  # noqa: PLC0415

    layout = _layout_for(argument, cwd, progress)
    if port is None:
        port = int(engine.serving_config(layout)["serving"]["port"])
    return engine.start(layout, port=port, output=output, platform=platform)


def run_examples(
    argument: str,
    *,
    port: int,
    platform: str | None = None,
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
    with engine.start(layout, port=port, output=log, platform=platform) as server:
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


# -- supply chain -----------------------------------------------------------------------------
if TYPE_CHECKING:
    from omi_build.sign import Signed
    from omi_build.verify import Check


def _one_selection(argument: str, cwd: Path | None) -> tuple[workspace.Selection, str]:
    selections = workspace.resolve([argument], cwd)
    chosen = [(s, t) for s in selections for t in s.targets]
    if len(chosen) != 1:
        labels = ", ".join(sorted(s.package.label(t) for s, t in chosen))
        msg = f"'{argument}' selects {len(chosen)} targets ({labels or 'none'})"
        raise BuildError(msg, hint="name one, e.g. //package:cpu")
    return chosen[0]


def _existing_layout(argument: str, cwd: Path | None) -> tuple[Path, Manifest | None]:
    """A layout as given, or the one a label's build wrote (never built here), and the
    manifest behind it when a label named it."""
    from omi_build import build as pipeline  # noqa: PLC0415
    from omi_build.errors import LayoutError  # noqa: PLC0415

    candidate = Path(argument) if Path(argument).is_absolute() else (cwd or Path.cwd()) / argument
    if (candidate / "oci-layout").is_file():
        return candidate, None
    selection, target = _one_selection(argument, cwd)
    directory = pipeline.output_dir(selection, target, None, several=False)
    if not (directory / "oci-layout").is_file():
        msg = f"{selection.package.label(target)} has not been built ({directory} holds no layout)"
        raise LayoutError(msg, hint=f"omi-build build {selection.package.label(target)}")
    return directory, selection.manifest


def sbom(argument: str, *, fmt: str = "spdx", platform: str | None = None, cwd: Path | None = None) -> bytes:
    """The SBOM the build attached to one platform image of a layout or label."""
    from omi_build import sbom as documents  # noqa: PLC0415
    from omi_build.errors import LayoutError  # noqa: PLC0415
    from omi_build.image.layout import Layout  # noqa: PLC0415
    from omi_build.platforms import arch_of, host_platform  # noqa: PLC0415

    directory, _ = _existing_layout(argument, cwd)
    layout = Layout.open(directory)
    images = layout.images()
    wanted = arch_of(platform) if platform else None
    if wanted is None:
        host = arch_of(host_platform() or "linux/amd64")
        wanted = host if any(i.architecture == host for i in images) else images[0].architecture
    image = layout.image(wanted)
    media_type = documents.FORMATS[fmt]
    for descriptor in layout.referrers(image.digest, media_type):
        blob = layout.json_blob(descriptor.digest)["layers"][0]
        return layout.blob(str(blob["digest"]))
    msg = f"the linux/{wanted} image in {directory} carries no {fmt} SBOM"
    raise LayoutError(msg, hint="build it again with this omi-build: every build attaches its SBOMs")


def keygen(prefix: Path, password: bytes, *, force: bool = False) -> tuple[Path, Path]:
    """Write an encrypted cosign key pair: `<prefix>.key` (0600) and `<prefix>.pub`."""
    from omi_build import atomic  # noqa: PLC0415
    from omi_build.errors import SigningKeyError  # noqa: PLC0415
    from omi_build.sign import keys  # noqa: PLC0415

    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    for path in (private, public):
        if path.exists() and not force:
            msg = f"{path} exists; omi-build never overwrites a key"
            raise SigningKeyError(msg, hint="pass --output-key-prefix for other names, or --force")
    if not prefix.parent.is_dir():
        msg = f"no folder {prefix.parent} for the key pair"
        raise SigningKeyError(msg, hint="create it, or pass another --output-key-prefix")
    key = keys.generate()
    atomic.write_bytes(private, keys.encrypt(key, password), mode=0o600)
    atomic.write_bytes(public, key.public.pem())
    return private, public


def sign(
    argument: str,
    *,
    key: Path | None = None,
    password: Any = None,
    identity_token: str | None = None,
    reference: str | None = None,
    cwd: Path | None = None,
    progress: Progress | None = None,
) -> tuple[Path, list[Signed]]:
    """Sign a layout's (or label's) images, index, attestations and model files, with a cosign
    key (`password` is the key's password, or a callable asked for it) or keylessly."""
    from omi_build.errors import SigningKeyError  # noqa: PLC0415
    from omi_build.image.layout import Layout  # noqa: PLC0415
    from omi_build.sign import KeySigner, Signer, keyless, keys  # noqa: PLC0415
    from omi_build.sign import sign as sign_layout  # noqa: PLC0415

    directory = _layout_for(argument, cwd, progress)
    layout = Layout.open(directory)
    signer: Signer
    if key is not None:
        try:
            data = key.read_bytes()
        except OSError as exc:
            msg = f"cannot read the key {key}: {exc.strerror}"
            raise SigningKeyError(msg, hint="make a key pair with 'omi-build keygen'") from exc
        secret = password() if callable(password) else password
        signer = KeySigner(keys.decrypt(data, secret or b"", what=str(key)))
    else:
        signer = keyless.Signer(identity_token)
    if reference is None:
        annotations = layout.json_blob(layout.target_index().digest).get("annotations", {})
        reference = f"{annotations.get('org.opencontainers.image.title', directory.name)}:" + str(
            annotations.get("org.opencontainers.image.version", "latest")
        )
    return directory, sign_layout(layout, signer, reference=reference)


def verify(
    argument: str,
    *,
    key: Path | None = None,
    identity: str = "",
    identity_regexp: str = "",
    issuer: str = "",
    issuer_regexp: str = "",
    trusted_root: Path | None = None,
    require: Iterable[str] = (),
    insecure_registries: Iterable[str] = (),
    cwd: Path | None = None,
) -> tuple[str, list[Check]]:
    """Verify a layout (or a label's layout, under its manifest's security.signing) offline,
    or an image in a registry: pulled with its referrers into a scratch layout, then verified
    the same way, so what verifies is what the registry serves."""
    import tempfile  # noqa: PLC0415

    if _is_reference(argument, cwd):
        with tempfile.TemporaryDirectory(prefix="omi-verify-") as scratch:
            pulled = pull(argument, Path(scratch) / "layout", insecure_registries=insecure_registries)
            _, checks = _verify(
                str(pulled.directory), key=key, identity=identity, identity_regexp=identity_regexp,
                issuer=issuer, issuer_regexp=issuer_regexp, trusted_root=trusted_root, require=require,
                cwd=cwd,
            )  # fmt: skip
            return pulled.reference, checks
    directory, checks = _verify(
        argument, key=key, identity=identity, identity_regexp=identity_regexp, issuer=issuer,
        issuer_regexp=issuer_regexp, trusted_root=trusted_root, require=require, cwd=cwd,
    )  # fmt: skip
    return str(directory), checks


def _verify(
    argument: str,
    *,
    key: Path | None,
    identity: str,
    identity_regexp: str,
    issuer: str,
    issuer_regexp: str,
    trusted_root: Path | None,
    require: Iterable[str],
    cwd: Path | None,
    signatures_required: bool = False,
) -> tuple[Path, list[Check]]:
    from omi_build.errors import VerificationError  # noqa: PLC0415
    from omi_build.image.layout import Layout  # noqa: PLC0415
    from omi_build.sign import keyless, keys  # noqa: PLC0415
    from omi_build.verify import Trust  # noqa: PLC0415
    from omi_build.verify import verify as verify_layout  # noqa: PLC0415

    directory, manifest = _existing_layout(argument, cwd)
    signing = manifest.security.signing if manifest is not None else None
    if key is None and not (identity or identity_regexp) and signing is not None:
        if signing.public_key:
            key = manifest.directory / signing.public_key if manifest else None
        elif signing.keyless is not None:
            identity, issuer = signing.keyless.identity, signing.keyless.issuer
    public = None
    if key is not None:
        try:
            public = keys.PublicKey.from_pem(key.read_bytes(), what=str(key))
        except OSError as exc:
            msg = f"cannot read the public key {key}: {exc.strerror}"
            raise VerificationError(msg) from exc
    who = None
    optional = signing is not None and not signing.required and not signatures_required
    if public is None and not (optional and not (identity or identity_regexp or issuer or issuer_regexp)):
        if not (identity or identity_regexp) or not (issuer or issuer_regexp):
            msg = "verify needs a key or a keyless identity to trust"
            raise VerificationError(
                msg,
                hint="pass --key cosign.pub, or --certificate-identity[-regexp] with "
                "--certificate-oidc-issuer[-regexp] (or set security.signing in omi.yaml)",
            )
        who = keyless.Identity(
            identity=identity, identity_regexp=identity_regexp, issuer=issuer, issuer_regexp=issuer_regexp
        )
    trust = Trust(
        key=public,
        identity=who,
        trusted_root=trusted_root,
        require=frozenset(require),
        signatures_optional=optional,
    )
    return directory, verify_layout(Layout.open(directory), trust)


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """What `deploy` wrote: the document, its image, what verified, the CRD problems found."""

    document: dict[str, Any]
    text: str
    image: str
    verified: list[Check]
    skipped_verification: bool


@contextlib.contextmanager
def _deployable(
    argument: str,
    *,
    image: str | None,
    trust: dict[str, Any],
    skip_verify: bool,
    insecure_registries: Iterable[str],
    cwd: Path | None,
) -> Iterator[tuple[Any, Layout, list[Check]]]:
    """The verified image a deployment describes, and the layout it was read from (what an
    archive is written from: the bytes verified, not a second pull): a registry reference
    (pulled, verified as the registry serves it), or a label or layout plus where it was
    pushed (`image`)."""
    import tempfile  # noqa: PLC0415

    from omi_build import deploy  # noqa: PLC0415
    from omi_build.errors import DeployError  # noqa: PLC0415
    from omi_build.image.layout import Layout  # noqa: PLC0415
    from omi_build.platforms import arch_of, host_platform  # noqa: PLC0415
    from omi_build.registry import Reference  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="omi-deploy-") as scratch:
        if _is_reference(argument, cwd):
            repository = Reference.parse(argument).name
            pulled = pull(argument, Path(scratch) / "layout", insecure_registries=insecure_registries)
            argument = str(pulled.directory)
        elif image:
            repository = Reference.parse(image).name
        else:
            msg = "deploying a local image needs the registry it was pushed to"
            raise DeployError(
                msg, hint="pass --image host/repository (after omi-build push), or deploy host/repository:tag"
            )
        directory, checks = (
            (_existing_layout(argument, cwd)[0], []) if skip_verify
            else _verify(argument, cwd=cwd, signatures_required=True, **trust)
        )  # fmt: skip
        layout = Layout.open(directory)
        architectures = [i.architecture for i in layout.images()]
        arch = arch_of(host_platform() or "linux/amd64")
        yield (
            deploy.read_image(layout, repository, arch if arch in architectures else architectures[0]),
            layout,
            checks,
        )


def deploy_kserve(
    argument: str,
    *,
    image: str | None = None,
    mode: str = "knative",
    name: str | None = None,
    namespace: str | None = None,
    crd: Path | None = None,
    skip_verify: bool = False,
    trust: dict[str, Any] | None = None,
    insecure_registries: Iterable[str] = (),
    cwd: Path | None = None,
) -> Deployment:
    """Verify the image (unless `skip_verify`), then describe it as a KServe InferenceService:
    checked against the rules the CRD leaves out, and against `crd` when given."""
    from omi_build import deploy  # noqa: PLC0415
    from omi_build.errors import DeployError  # noqa: PLC0415

    with _deployable(
        argument, image=image, trust=_trust(trust), skip_verify=skip_verify,
        insecure_registries=insecure_registries, cwd=cwd,
    ) as (found, _, checks):  # fmt: skip
        document = deploy.kserve(found, mode=mode, name=name, namespace=namespace)
    problems = deploy.check_kserve(document, mode=mode)
    if crd is not None:
        problems += deploy.validate_crd(document, crd)
    if problems:
        msg = "the InferenceService would not deploy: " + "; ".join(problems)
        raise DeployError(msg)
    return Deployment(
        document=document, text=deploy.to_yaml(document), image=found.reference, verified=checks,
        skipped_verification=skip_verify,
    )  # fmt: skip


def deploy_modzy(
    argument: str,
    *,
    image: str | None = None,
    archive: Path | None = None,
    skip_verify: bool = False,
    trust: dict[str, Any] | None = None,
    insecure_registries: Iterable[str] = (),
    cwd: Path | None = None,
) -> Deployment:
    """Verify the image (unless `skip_verify`), then write what Modzy imports: its metadata,
    and with `archive` the docker-save tar of the image (else Modzy pulls the reference)."""
    from omi_build import deploy  # noqa: PLC0415

    if archive is not None and image is None and not _is_reference(argument, cwd):
        image = "omi-build.local/model"  # the tar carries the image; the name is only a label
    with _deployable(
        argument, image=image, trust=_trust(trust), skip_verify=skip_verify,
        insecure_registries=insecure_registries, cwd=cwd,
    ) as (found, layout, checks):  # fmt: skip
        source = found.reference
        if archive is not None:
            from omi_build import image as images  # noqa: PLC0415

            model = found.config["model"]
            images.write_docker_archive_of(
                archive, layout, layout.images()[0], repo_tag=f"{model['name']}:{model['version']}"
            )
            source = str(archive)
        document = deploy.modzy(found, source=source)
    return Deployment(
        document=document, text=deploy.to_yaml(document), image=found.reference, verified=checks,
        skipped_verification=skip_verify,
    )  # fmt: skip


def _is_reference(argument: str, cwd: Path | None) -> bool:
    from omi_build.registry import looks_like_reference  # noqa: PLC0415

    return looks_like_reference(argument) and not (cwd or Path.cwd()).joinpath(argument).exists()


def _trust(given: dict[str, Any] | None) -> dict[str, Any]:
    keys = ("key", "identity", "identity_regexp", "issuer", "issuer_regexp", "trusted_root", "require")
    defaults: dict[str, Any] = {"key": None, "trusted_root": None, "require": ()}
    return {k: (given or {}).get(k, defaults.get(k, "")) for k in keys}
