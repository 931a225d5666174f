"""Command-line interface: parsing and rendering only; the work happens in omi_build.api."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from omi_build import __version__, api
from omi_build.errors import OmiError
from omi_build.resources import schema_path

from . import _render

EXIT_CODES = """\
exit codes:
  0  success
  1  failure (missing file, tool, network, build error)
  2  manifest problems, or a command-line usage error
  3  lock --check --security: a locked Debian package has a newer security update
  4  verify: a signature, attestation or digest did not verify
"""

ENVIRONMENT = """\
environment:
  OMI_BUILD_CACHE          the cache of downloads, unpacked packages and layers
                           (default: $XDG_CACHE_HOME/omi-build, else ~/.cache/omi-build)
  SOURCE_DATE_EPOCH        the time stamp of every file in the image (else the
                           manifest's build.source_date_epoch)
  OMI_DEBIAN_MIRROR        the Debian mirror (the suite and -updates), when the manifest
                           names none (else the host's apt sources)
  OMI_DEBIAN_SECURITY_MIRROR
                           the mirror of Debian's security archive (default: the mirror's
                           .../debian as .../debian-security, else the host's apt sources)
  OMI_DEBIAN_SNAPSHOT_URL  a snapshot mirror URL with {snapshot}, for build.base.snapshot
  OMI_DEBIAN_SECURITY_SNAPSHOT_URL
                           the same for the security archive (default: derived likewise)
  OMI_NETWORK_TIMEOUT      seconds a mirror or index may stay silent before a try fails
                           (default 15; a slow download that keeps moving never times out)
  OMI_NETWORK_ATTEMPTS     tries of each download (default 3: a silent mirror fails in ~47 s)
  COSIGN_PASSWORD          the password of a cosign key (keygen, sign --key); else asked
  SIGSTORE_ID_TOKEN        an OIDC token for keyless signing (else --identity-token, or
                           GitHub Actions' own with 'permissions: id-token: write')
  OMI_REGISTRY_USERNAME, OMI_REGISTRY_PASSWORD
                           registry credentials (CI secrets); else REGISTRY_AUTH_FILE,
                           containers' auth.json, docker's config.json and its helpers
"""

_READS_ENVIRONMENT = frozenset(
    {
        "lock",
        "build",
        "policy",
        "run",
        "test",
        "cache",
        "keygen",
        "sign",
        "push",
        "pull",
        "load",
        "deploy",
        "verify",
    }
)  # their --help lists ENVIRONMENT

LABEL_HELP = "a directory, an omi.yaml, or a label: //pkg:target, //pkg, //pkg/..., //..., :target"


class _Streams:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err


def _cmd_validate(args: argparse.Namespace, io: _Streams) -> int:
    manifests = api.validate(args.targets)
    if args.format == "json":
        payload = {
            "ok": True,
            "manifests": [
                {
                    "file": str(m.path),
                    "name": m.metadata.name,
                    "version": m.metadata.version,
                    "targets": [t.name for t in m.targets],
                }
                for m in manifests
            ],
        }
        io.out.write(json.dumps(payload, indent=2) + "\n")
    else:
        for m in manifests:
            targets = ", ".join(t.name for t in m.targets)
            io.out.write(f"ok: {m.path} ({m.metadata.name} {m.metadata.version}; targets: {targets})\n")
    return 0


def _cmd_schema(_args: argparse.Namespace, io: _Streams) -> int:
    io.out.write(schema_path().read_text(encoding="utf-8"))
    return 0


def _cmd_init(args: argparse.Namespace, io: _Streams) -> int:
    written = api.init(Path(args.directory), force=args.force)
    if args.format == "json":
        io.out.write(json.dumps({"ok": True, "written": [str(p) for p in written]}) + "\n")
    else:
        for path in written:
            io.out.write(f"wrote {path}\n")
        io.out.write(f"next: omi-build validate {args.directory}\n")
    return 0


def _selection_arguments(parser: argparse.ArgumentParser) -> None:
    """What build and policy take alike: the labels, one target or platform, --locked."""
    parser.add_argument("targets", nargs="*", metavar="PATH|LABEL", help=LABEL_HELP)
    parser.add_argument("--target", metavar="T", help="only this target")
    parser.add_argument("--platform", metavar="P", help="only this platform, e.g. linux/amd64")
    parser.add_argument(
        "--locked", action="store_true", help="use omi.lock as it is; fail if it is missing or stale"
    )


def _cmd_policy(args: argparse.Namespace, io: _Streams) -> int:
    checked = api.policy(
        args.targets,
        target=args.target,
        platform=args.platform,
        locked=args.locked,
        progress=_progress(args, io),
    )
    broken = [r for target in checked for r in target.policy if not r.ok]
    if args.format == "json":
        rows = [
            {
                "label": target.label, "rule": r.rule, "platform": r.platform, "ok": r.ok,
                "checked": r.checked, "found": r.found, "offending": list(r.offending),
                **({"hint": r.hint} if not r.ok else {}),
            }
            for target in checked
            for r in target.policy
        ]  # fmt: skip
        io.out.write(json.dumps({"ok": not broken, "rules": rows}, indent=2) + "\n")
    else:
        for target in checked:
            io.out.write(f"{target.label}\n")
            for r in target.policy:
                where = f" {r.platform}" if r.platform else ""
                io.out.write(f"  {'OK  ' if r.ok else 'FAIL'} {r.rule}{where}: {r.checked}: {r.found}\n")
                for item in r.offending:
                    io.out.write(f"         - {item}\n")
                if not r.ok:
                    io.out.write(f"         to allow: {r.hint}\n")
        rules = sum(len(t.policy) for t in checked)
        io.out.write(f"{rules - len(broken)} of {rules} rules hold\n")
    return 0 if not broken else 1


def _cmd_query(args: argparse.Namespace, io: _Streams) -> int:
    selections = api.query(args.labels)
    if args.format == "json":
        rows = [
            {
                "label": selection.package.label(name),
                "package": selection.package.label(),
                "target": name,
                "manifest": str(selection.manifest.path),
                "accelerator": selection.manifest.target(name).accelerator,
                "platforms": list(selection.manifest.target(name).platforms),
            }
            for selection in selections
            for name in selection.targets
        ]
        io.out.write(json.dumps(rows, indent=2) + "\n")
    else:
        for selection in selections:
            for label in selection.labels():
                io.out.write(label + "\n")
    return 0


class _StderrProgress:
    """Human progress on stderr; silent in --format json."""

    def __init__(self, err: TextIO, *, enabled: bool) -> None:
        self.err = err
        self.enabled = enabled
        self.started = time.monotonic()

    def step(self, message: str) -> None:
        if self.enabled:
            self.err.write(f"[{time.monotonic() - self.started:6.1f}s] {message}\n")
            self.err.flush()

    def transfer(self, name: str, done: int, total: int | None) -> None:
        if self.enabled and total and done == total and total >= 1 << 20:
            self.step(f"  fetched {name} ({total / 1e6:.1f} MB)")


def _progress(args: argparse.Namespace, io: _Streams) -> _StderrProgress:
    return _StderrProgress(io.err, enabled=args.format == "human")


def _cmd_lock(args: argparse.Namespace, io: _Streams) -> int:
    if args.security and not args.check:
        io.err.write("error: --security goes with --check\n")
        return 2
    results = api.lock(args.targets, check=args.check, security=args.security, progress=_progress(args, io))
    if args.format == "json":
        rows = [{"lock": str(r.path), "changed": r.changed} for r in results]
        io.out.write(json.dumps(rows, indent=2) + "\n")
    else:
        for result in results:
            state = "up to date" if args.check else ("written" if result.changed else "unchanged")
            io.out.write(f"{result.path}: {state}\n")
    return 0


def _cmd_build(args: argparse.Namespace, io: _Streams) -> int:
    built = api.build(
        args.targets,
        target=args.target,
        platform=args.platform,
        output=Path(args.output) if args.output else None,
        locked=args.locked,
        docker_archive=Path(args.docker_archive) if args.docker_archive else None,
        cache_repo=args.cache_repo,
        insecure_registries=args.insecure_registry,
        progress=_progress(args, io),
    )
    pushed = []
    if args.push:
        pushed = api.push_built(
            built, args.push, force=args.force, insecure_registries=args.insecure_registry,
            mount_from=[args.cache_repo] if args.cache_repo else [], progress=_progress(args, io),
        )  # fmt: skip
    if args.format == "json" or args.json:
        rows = [
            {
                "label": image.label,
                "target": image.target,
                "platform": image.platform,
                "digest": image.digest,
                "index": image.index,
                "layout": str(image.layout),
                "size": image.size,
                "compressed_size": image.compressed_size,
            }
            for target in built
            for image in target.images
        ]
        if pushed:
            io.out.write(
                json.dumps({"images": rows, "pushed": [_pushed_json(p) for p in pushed]}, indent=2) + "\n"
            )
            return 0
        io.out.write(json.dumps(rows, indent=2) + "\n")
    else:
        for image in (image for target in built for image in target.images):
            io.out.write(
                f"{image.label} {image.platform} {image.digest} "
                f"({image.size / 1e6:.1f} MB, {image.compressed_size / 1e6:.1f} MB compressed)\n"
                f"  layout: {image.layout} (index {image.index})\n"
            )
        for result in pushed:
            _pushed_human(result, io)
    return 0


def _pushed_json(result: Any) -> dict[str, Any]:
    return {
        "reference": result.reference,
        "digest": result.digest,
        "images": [{"platform": platform, "digest": digest} for platform, digest in result.images],
        "referrers": result.referrers,
        "blobs": result.blobs,
        "referrers_api": result.referrers_api,
    }


def _pushed_human(result: Any, io: _Streams) -> None:
    blobs = ", ".join(f"{count} {state}" for state, count in result.blobs.items()) or "none"
    where = "the referrers API" if result.referrers_api else "the fallback tag"
    io.out.write(f"pushed {result.reference}\n")
    for platform, digest in result.images:
        io.out.write(f"  {platform:<12} {digest}\n")
    io.out.write(f"  blobs: {blobs}; {result.referrers} referrers (listed by {where})\n")


def _cmd_push(args: argparse.Namespace, io: _Streams) -> int:
    result = api.push(
        args.image, args.reference, force=args.force, insecure_registries=args.insecure_registry,
        mount_from=args.mount_from, progress=_progress(args, io),
    )  # fmt: skip
    if args.format == "json":
        io.out.write(json.dumps(_pushed_json(result), indent=2) + "\n")
    else:
        _pushed_human(result, io)
    return 0


def _cmd_pull(args: argparse.Namespace, io: _Streams) -> int:
    result = api.pull(
        args.reference,
        Path(args.directory),
        insecure_registries=args.insecure_registry,
        progress=_progress(args, io),
    )
    if args.format == "json":
        row = {
            "reference": result.reference, "digest": result.digest, "layout": str(result.directory),
            "tag": result.tag, "images": [{"platform": p, "digest": d} for p, d in result.images],
            "referrers": result.referrers, "blobs_downloaded": result.blobs,
        }  # fmt: skip
        io.out.write(json.dumps(row, indent=2) + "\n")
    else:
        io.out.write(f"pulled {result.reference} into {result.directory} (tag {result.tag})\n")
        for platform, digest in result.images:
            io.out.write(f"  {platform:<12} {digest}\n")
        io.out.write(f"  {result.referrers} referrers; {result.blobs} blobs downloaded\n")
    return 0


def _cmd_load(args: argparse.Namespace, io: _Streams) -> int:
    where = api.load_image(
        args.image, into=args.into, name=args.name, platform=args.platform,
        storage_driver=args.storage_driver,
        root=Path(args.root) if args.root else None, runroot=Path(args.runroot) if args.runroot else None,
        insecure_registries=args.insecure_registry, progress=_progress(args, io),
    )  # fmt: skip
    if args.format == "json":
        io.out.write(json.dumps({"loaded": where}, indent=2) + "\n")
    else:
        io.out.write(f"loaded into {where}\n")
    return 0


def _trust_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "key": Path(args.key) if args.key else None,
        "identity": args.certificate_identity or "",
        "identity_regexp": args.certificate_identity_regexp or "",
        "issuer": args.certificate_oidc_issuer or "",
        "issuer_regexp": args.certificate_oidc_issuer_regexp or "",
        "trusted_root": Path(args.trusted_root) if args.trusted_root else None,
        "require": [r.strip() for part in args.require for r in part.split(",") if r.strip()],
    }


def _cmd_deploy(args: argparse.Namespace, io: _Streams) -> int:
    trust = _trust_arguments(args)
    common = {
        "image": args.image_ref, "skip_verify": args.insecure_skip_verify, "trust": trust,
        "insecure_registries": args.insecure_registry,
    }  # fmt: skip
    if args.platform_name == "kserve":
        deployment = api.deploy_kserve(
            args.image, mode=args.mode, name=args.name, namespace=args.namespace,
            crd=Path(args.crd) if args.crd else None, **common,
        )  # fmt: skip
    else:
        deployment = api.deploy_modzy(
            args.image, archive=Path(args.archive) if args.archive else None, **common
        )
    if args.insecure_skip_verify:
        io.err.write("warning: --insecure-skip-verify: the image was NOT verified before deployment\n")
    else:
        io.err.write(f"verified {deployment.image} ({len(deployment.verified)} checks passed)\n")
    text = json.dumps(deployment.document, indent=2) + "\n" if args.format == "json" else deployment.text
    if args.output:
        from omi_build import atomic  # noqa: PLC0415

        atomic.write_text(Path(args.output), text)
        io.err.write(f"wrote {args.output}\n")
    else:
        io.out.write(text)
    return 0


def _cmd_cache(args: argparse.Namespace, io: _Streams) -> int:
    if args.action == "clean":
        root, freed = api.clean_cache(keep_downloads=args.keep_downloads)
        if args.format == "json":
            io.out.write(json.dumps({"path": str(root), "freed_bytes": freed}, indent=2) + "\n")
        else:
            kept = " (downloads kept)" if args.keep_downloads else ""
            io.out.write(f"{root}: {freed / 1e6:.1f} MB freed{kept}\n")
        return 0
    root, rows = api.cache_usage()
    total = sum(row.size for row in rows)
    if args.format == "json":
        folders = [{"folder": r.folder, "what": r.what, "files": r.files, "bytes": r.size} for r in rows]
        io.out.write(
            json.dumps({"path": str(root), "folders": folders, "total_bytes": total}, indent=2) + "\n"
        )
        return 0
    io.out.write(f"{root}\n")
    for row in rows:
        io.out.write(f"  {row.folder:<14} {row.size / 1e6:9.1f} MB {row.files:7d} files  {row.what}\n")
    io.out.write(f"  {'total':<14} {total / 1e6:9.1f} MB\n")
    return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cmd_run(args: argparse.Namespace, io: _Streams) -> int:
    from omi_build.engine import wait_serving  # noqa: PLC0415

    # SIGTERM (a supervisor, `timeout`, a cancelled CI step) and SIGHUP (a closed terminal)
    # stop it as Ctrl-C does: drain, then remove the container and its bundle.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        server = api.run(args.image, port=args.port, platform=args.platform, progress=_progress(args, io))
        try:
            seconds = wait_serving(server)
            io.err.write(
                f"serving on 127.0.0.1:{server.port} after {seconds:.2f} s ({server.runtime}); "
                "Ctrl-C stops it\n"
            )
            io.err.flush()
            server.process.wait()
        except KeyboardInterrupt:
            io.err.write("stopping (draining in-flight requests)\n")
            io.err.flush()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
            for signum in previous:
                signal.signal(signum, signal.SIG_IGN)
            code = server.stop()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if code in (0, None, -15, 143) else 1


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _cmd_test(args: argparse.Namespace, io: _Streams) -> int:
    with tempfile.TemporaryFile() as log:
        try:
            outcomes = api.run_examples(
                args.image,
                port=args.port or _free_port(),
                platform=args.platform,
                progress=_progress(args, io),
                log=log,
            )
        except OmiError:
            log.seek(0)
            io.err.write(log.read().decode(errors="replace"))
            raise
    failed = [o for o in outcomes if not o.passed]
    if args.format == "json":
        rows = [
            {"example": o.example, "protocol": o.protocol, "passed": o.passed, "detail": o.detail}
            for o in outcomes
        ]
        io.out.write(json.dumps({"ok": not failed, "results": rows}, indent=2) + "\n")
    else:
        width = max(len(o.example) for o in outcomes)
        io.out.write(f"{'example':<{width}}  {'protocol':<10}  result\n")
        for o in outcomes:
            io.out.write(
                f"{o.example:<{width}}  {o.protocol:<10}  {'PASS' if o.passed else 'FAIL'}  {o.detail}\n"
            )
        io.out.write(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed\n")
    return 1 if failed else 0


def _password(*, confirm: bool) -> bytes:
    """The cosign key's password: COSIGN_PASSWORD, else asked on the terminal (twice for a new key)."""
    import getpass  # noqa: PLC0415

    from omi_build import settings  # noqa: PLC0415
    from omi_build.errors import SigningKeyError  # noqa: PLC0415

    if (given := settings.cosign_password()) is not None:
        return given
    if not sys.stdin.isatty():
        msg = "no password for the key: COSIGN_PASSWORD is not set and there is no terminal to ask on"
        raise SigningKeyError(msg, hint="set COSIGN_PASSWORD (it may be empty)")
    first = getpass.getpass("Enter password for private key: ")
    if confirm and getpass.getpass("Enter password for private key again: ") != first:
        msg = "the two passwords differ"
        raise SigningKeyError(msg, hint="run keygen again")
    return first.encode()


def _cmd_sbom(args: argparse.Namespace, io: _Streams) -> int:
    document = api.sbom(args.image, fmt=args.sbom_format, platform=args.platform)
    io.out.write(document.decode() + "\n")
    return 0


def _cmd_keygen(args: argparse.Namespace, io: _Streams) -> int:
    private, public = api.keygen(Path(args.output_key_prefix), _password(confirm=True), force=args.force)
    if args.format == "json":
        io.out.write(json.dumps({"private_key": str(private), "public_key": str(public)}, indent=2) + "\n")
    else:
        io.out.write(f"Private key written to {private}\nPublic key written to {public}\n")
    return 0


def _cmd_sign(args: argparse.Namespace, io: _Streams) -> int:
    from omi_build import settings  # noqa: PLC0415

    key = None if args.key in (None, "keyless") else Path(args.key)
    started = time.perf_counter()
    layout, signed = api.sign(
        args.image,
        key=key,
        password=lambda: _password(confirm=False),
        identity_token=args.identity_token or settings.identity_token(),
        reference=args.reference,
        progress=_progress(args, io),
    )
    elapsed = time.perf_counter() - started
    if args.format == "json":
        rows = [
            {"kind": s.kind, "platform": s.platform, "subject": s.subject, "artifact": s.artifact}
            for s in signed
        ]
        io.out.write(json.dumps({"layout": str(layout), "signed": rows}, indent=2) + "\n")
    else:
        for s in signed:
            io.out.write(f"{s.platform:<12} {s.kind:<36} {s.subject}\n")
        io.out.write(f"signed {len(signed)} artifacts in {layout} ({elapsed:.2f} s)\n")
    return 0


def _cmd_verify(args: argparse.Namespace, io: _Streams) -> int:
    from omi_build.errors import VerificationError  # noqa: PLC0415

    require = [r.strip() for part in args.require for r in part.split(",") if r.strip()]
    try:
        layout, checks = api.verify(
            args.image,
            key=Path(args.key) if args.key else None,
            identity=args.certificate_identity or "",
            identity_regexp=args.certificate_identity_regexp or "",
            issuer=args.certificate_oidc_issuer or "",
            issuer_regexp=args.certificate_oidc_issuer_regexp or "",
            trusted_root=Path(args.trusted_root) if args.trusted_root else None,
            require=require,
            insecure_registries=args.insecure_registry,
        )
    except VerificationError as exc:
        if args.format != "json":
            _checks_table(list(exc.verified), io)  # what held before the failure
            io.out.flush()
        raise
    if args.format == "json":
        rows = [
            {"subject": c.subject, "platform": c.platform, "check": c.what, "detail": c.detail}
            for c in checks
        ]
        io.out.write(json.dumps({"ok": True, "layout": str(layout), "verified": rows}, indent=2) + "\n")
    else:
        _checks_table(checks, io)
        io.out.write(f"verified: {layout} ({len(checks)} checks passed)\n")
    return 0


def _checks_table(checks: list, io: _Streams) -> None:  # type: ignore[type-arg]
    for check in checks:
        io.out.write(f"OK  {check.platform:<12} {check.what:<36} {check.subject[:19]}  {check.detail}\n")


Command = Callable[[argparse.Namespace, _Streams], int]


def _image_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", metavar="LABEL|LAYOUT", help="a label or package path (built first) or an OCI layout"
    )


def _emulated_platform(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--platform",
        metavar="P",
        help="the image to run (default: this machine's); another platform's runs under "
        "qemu-user-static with runc, e.g. linux/arm64 on an amd64 machine",
    )


def _add_supply_chain(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """sbom, keygen, sign and verify: what a deployment checks before it runs an image."""
    sbom = add(
        "sbom",
        _cmd_sbom,
        "print the SBOM the build attached to an image (exact: from omi.lock and the layers, "
        "not a scan): SPDX 2.3 or CycloneDX 1.6 JSON",
    )
    _image_argument(sbom)
    sbom.add_argument(
        "--sbom-format",
        choices=("spdx", "cyclonedx"),
        default="spdx",
        help="the SBOM's format (default: spdx)",
    )
    sbom.add_argument("--platform", metavar="P", help="which platform's image (default: this machine's)")
    keygen = add(
        "keygen",
        _cmd_keygen,
        "write an encrypted cosign key pair (cosign.key, cosign.pub) that cosign also reads; the "
        "password comes from COSIGN_PASSWORD or a prompt",
    )
    keygen.add_argument(
        "--output-key-prefix",
        default="cosign",
        metavar="PREFIX",
        help="write PREFIX.key and PREFIX.pub (default: cosign)",
    )
    keygen.add_argument("--force", action="store_true", help="overwrite existing key files")
    sign = add(
        "sign",
        _cmd_sign,
        "sign a built image's platform images and index (cosign v3 bundles, and with a key also "
        "cosign's classic signatures), its SBOM and provenance attestations and its model files; "
        "the image digests do not change",
    )
    _image_argument(sign)
    sign.add_argument(
        "--key",
        metavar="FILE|keyless",
        help="a cosign private key (its password from COSIGN_PASSWORD or a prompt); without it, "
        "or with 'keyless', sign with a sigstore certificate for an OIDC identity",
    )
    sign.add_argument(
        "--identity-token", metavar="TOKEN", help="keyless: the OIDC token (else SIGSTORE_ID_TOKEN, or CI's)"
    )
    sign.add_argument(
        "--reference", metavar="REF", help="the image reference the signatures name (default: name:version)"
    )
    verify = add(
        "verify",
        _cmd_verify,
        "verify a built image before deployment, offline: every digest, the signatures of the "
        "images and index, every attestation; print what verified; exit 4 naming the first failure",
    )
    verify.add_argument(
        "image",
        metavar="LABEL|LAYOUT",
        help="an OCI layout, or a label whose built layout (and security.signing) is used",
    )
    _trust_options(verify)
    _insecure_registry(verify)


def _trust_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", metavar="PUB", help="the signer's public key (cosign.pub)")
    parser.add_argument("--certificate-identity", metavar="ID", help="keyless: the signer's exact identity")
    parser.add_argument(
        "--certificate-identity-regexp", metavar="RE", help="keyless: a regular expression for it"
    )
    parser.add_argument("--certificate-oidc-issuer", metavar="URL", help="keyless: the exact OIDC issuer")
    parser.add_argument(
        "--certificate-oidc-issuer-regexp", metavar="RE", help="keyless: a regular expression for it"
    )
    parser.add_argument(
        "--trusted-root",
        metavar="FILE",
        help="keyless: a sigstore trusted_root.json (default: the public-good root in sigstore's wheel)",
    )
    parser.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="LIST",
        help="also require signed attestations: sbom, provenance, model (comma-separated)",
    )


def _insecure_registry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP (or unverified TLS) to this registry; a registry on a loopback address "
        "gets plain HTTP without it when it does not answer TLS (repeatable)",
    )


def _add_registry(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    """push, pull, load and deploy: getting images to registries and serving platforms."""
    push = add(
        "push",
        _cmd_push,
        "push a built image to an OCI registry: every platform's manifest, the index, and every "
        "signature, SBOM and attestation (OCI referrers; the sha256-<digest> fallback tag where the "
        "registry lacks the referrers API); blobs it has are skipped; the tag is written last",
    )
    _image_argument(push)
    push.add_argument(
        "reference", metavar="REF", help="host[:port]/repository[:tag] (default tag: the image's version)"
    )
    push.add_argument("--force", action="store_true", help="move the tag if it names another image")
    push.add_argument(
        "--mount-from",
        action="append",
        default=[],
        metavar="REF",
        help="a repository of the same registry to mount blobs from instead of uploading (repeatable)",
    )
    _insecure_registry(push)
    pull = add(
        "pull",
        _cmd_pull,
        "pull an image with every platform and every referrer into an OCI layout (what verify, "
        "run, test and deploy take), checking every digest",
    )
    pull.add_argument("reference", metavar="REF", help="host[:port]/repository:tag or …@sha256:<digest>")
    pull.add_argument("directory", metavar="DIR", help="an empty or new folder (or an earlier pull)")
    _insecure_registry(pull)
    load = add(
        "load",
        _cmd_load,
        "load an image (a layout, a label or a registry reference) into a docker engine that "
        "answers, else into containers-storage, for docker, podman or buildah to run (uses skopeo)",
    )
    load.add_argument("image", metavar="LABEL|LAYOUT|REF", help="what to load")
    load.add_argument(
        "--into", choices=("auto", "docker", "containers-storage"), default="auto", help="default: auto"
    )
    load.add_argument(
        "--name", metavar="NAME:TAG", help="the name it gets (default: the model's name:version)"
    )
    load.add_argument("--platform", metavar="P", help="which platform's image (default: this machine's)")
    load.add_argument("--storage-driver", metavar="DRIVER", help="containers-storage's driver, e.g. vfs")
    load.add_argument("--root", metavar="DIR", help="containers-storage's root (buildah/podman --root)")
    load.add_argument("--runroot", metavar="DIR", help="containers-storage's run root")
    _insecure_registry(load)
    deploy = add(
        "deploy",
        _cmd_deploy,
        "verify an image (signatures and the manifest's signing policy), then write what a serving "
        "platform takes: a KServe InferenceService pinned by digest, or Modzy's model metadata "
        "(and docker-archive tar); refuses what does not verify",
    )
    deploy.add_argument("platform_name", choices=("kserve", "modzy"), metavar="kserve|modzy", help="where to")
    deploy.add_argument(
        "image", metavar="REF|LABEL|LAYOUT",
        help="a registry reference (verified as the registry serves it), "
        "or a built image with --image naming where it was pushed",
    )  # fmt: skip
    deploy.add_argument(
        "--image", dest="image_ref", metavar="REF", help="the registry repository a local image was pushed to"
    )
    deploy.add_argument(
        "--mode", choices=("knative", "raw"), default="knative",
        help="kserve: Knative (port h2c, the default) or RawDeployment (port grpc-omi)",
    )  # fmt: skip
    deploy.add_argument(
        "--name", metavar="NAME", help="kserve: the InferenceService's name (default: the model's)"
    )
    deploy.add_argument("--namespace", metavar="NS", help="kserve: its namespace")
    deploy.add_argument(
        "--crd", metavar="FILE", help="kserve: also validate against this InferenceService CRD "
        "(kubectl get crd inferenceservices.serving.kserve.io -o yaml)",
    )  # fmt: skip
    deploy.add_argument(
        "--archive", metavar="FILE", help="modzy: also write the docker-archive tar Modzy imports"
    )
    deploy.add_argument("--output", metavar="FILE", help="write the description here (default: stdout)")
    deploy.add_argument(
        "--insecure-skip-verify", action="store_true",
        help="deploy WITHOUT verifying signatures (spelled out on purpose; never in production)",
    )  # fmt: skip
    _trust_options(deploy)
    _insecure_registry(deploy)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--format",
        choices=("human", "json"),
        default=argparse.SUPPRESS,
        help="output format (default: human); errors also go to GitHub annotations when GITHUB_ACTIONS=true",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks on errors",
    )
    parser = argparse.ArgumentParser(
        prog="omi-build",
        description="Compile an omi.yaml into a minimal, rootless, reproducible OCI "
        "image that serves the model over OMI v1 and OIP v2 gRPC.",
        epilog=ENVIRONMENT + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"omi-build {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Command, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            epilog=(ENVIRONMENT + "\n" if name in _READS_ENVIRONMENT else "") + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.set_defaults(handler=handler)
        return command

    validate = add(
        "validate",
        _cmd_validate,
        "check omi.yaml files against the schema and the files they name; "
        "report every problem as file:line:col: field: message",
    )
    validate.add_argument(
        "targets",
        nargs="*",
        metavar="PATH|LABEL",
        help=f"{LABEL_HELP} (default: the package here, else every package below)",
    )
    add("schema", _cmd_schema, "print the omi.yaml JSON Schema (draft 2020-12)")
    init = add("init", _cmd_init, "write a commented starter omi.yaml (and model.py) that validates")
    init.add_argument("directory", nargs="?", default=".", metavar="DIR", help="default: .")
    init.add_argument("--force", action="store_true", help="overwrite an existing omi.yaml")
    lock = add(
        "lock",
        _cmd_lock,
        "pin every Debian package and wheel of every target and platform in omi.lock",
    )
    lock.add_argument("targets", nargs="*", metavar="PATH|LABEL", help=LABEL_HELP)
    lock.add_argument(
        "--check",
        action="store_true",
        help="resolve nothing; exit 1 if omi.lock is missing or stale (for CI)",
    )
    lock.add_argument(
        "--security",
        action="store_true",
        help="with --check: also read the Debian archives' -security and -updates indexes and "
        "exit 3 if a locked package has a newer version there (for a scheduled CI job)",
    )
    build = add(
        "build",
        _cmd_build,
        "build an OCI image layout per target (one image per platform), daemonless and "
        "reproducible; resolves omi.lock first if it is missing or stale. Only what changed is "
        "read and built: a target whose inputs and output are as its last build left them is "
        "up to date at once; //... builds every package of the workspace with one cache",
    )
    _selection_arguments(build)
    build.add_argument(
        "--output",
        metavar="DIR",
        help="where the OCI layout goes (default: omi-out/<package>/<target> in the workspace)",
    )
    build.add_argument(
        "--docker-archive",
        metavar="FILE",
        help="also write a tar that 'docker load' and 'podman load' accept (first platform)",
    )
    build.add_argument(
        "--push",
        metavar="REF",
        help="then push each target's image to REF (host/repository[:tag]), as 'omi-build push' does",
    )
    build.add_argument(
        "--force", action="store_true", help="with --push: move a tag that names another image"
    )
    build.add_argument(
        "--cache-repo",
        metavar="REF",
        help="share built layers through this registry repository: layers other runners built are "
        "pulled instead of built, and layers built here are pushed (plain OCI manifests, one tag per layer)",
    )
    _insecure_registry(build)
    # Folded into the global --format json; kept, unlisted, for scripts that still pass it.
    build.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    checks = add(
        "policy",
        _cmd_policy,
        "check the manifest's security policy (user, hash pins, secrets among model files, "
        "licenses, setuid files, shells and package managers, image size) and print every rule, "
        "what it checked and what it found; exit 1 if one is broken. Builds layers into the "
        "cache, writes no output (build enforces the same rules)",
    )
    _selection_arguments(checks)
    run = add(
        "run",
        _cmd_run,
        "run a built image locally (docker or podman where an engine answers, else umoci + runc), "
        "wait until it serves, stream its logs; Ctrl-C drains and stops it",
    )
    _image_argument(run)
    _emulated_platform(run)
    run.add_argument("--port", type=int, help="port on 127.0.0.1 (default: the manifest's serving.port)")
    test = add(
        "test",
        _cmd_test,
        "run the image, send every model.examples entry through OMI v1 and OIP v2, compare the "
        "outputs (floats within the example's tolerance), print a table; exit 1 on any mismatch",
    )
    _image_argument(test)
    _emulated_platform(test)
    test.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    cache = add(
        "cache",
        _cmd_cache,
        "show what the cache of downloads, unpacked packages and layers holds, or clean it "
        "(clean refuses while a build is using the cache)",
    )
    cache.add_argument("action", nargs="?", choices=["info", "clean"], default="info", help="default: info")
    cache.add_argument(
        "--keep-downloads",
        action="store_true",
        help="with clean: keep the downloaded packages, remove what was built from them",
    )
    _add_supply_chain(add)
    _add_registry(add)
    query = add("query", _cmd_query, "list the targets that labels select, one label a line")
    query.add_argument("labels", nargs="*", metavar="LABEL", help=f"{LABEL_HELP} (default: //...)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run omi-build with `argv`; return the exit code. Only this module prints."""
    io = _Streams(out or sys.stdout, err or sys.stderr)
    args = build_parser().parse_args(argv)
    args.format = getattr(args, "format", "human")
    args.verbose = getattr(args, "verbose", False)
    handler: Command = args.handler
    try:
        return handler(args, io)
    except OmiError as exc:
        return _fail(exc, exc, args, io)
    except KeyboardInterrupt:
        io.err.write("interrupted\n")
        return 130
    except BrokenPipeError:  # `omi-build query | head`: the reader left, nothing to report
        return 1
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        message = f"{exc.strerror or exc}{where}"
        return _fail(exc, OmiError(message, hint="run with -v for the traceback"), args, io)
    except Exception as exc:  # noqa: BLE001 - a bug: one clear line, the traceback only with -v
        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = "run with -v for the traceback, and please report it with the command that caused it"
        return _fail(exc, OmiError(message, hint=hint), args, io)


def _fail(raised: BaseException, error: OmiError, args: argparse.Namespace, io: _Streams) -> int:
    if args.verbose:
        io.err.write("".join(traceback.format_exception(raised)))
    _render.error(error, fmt=args.format, out=io.out, err=io.err)
    return error.exit_code


def run() -> None:
    """The console script's entry point."""
    sys.exit(main())
