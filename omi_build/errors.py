"""The one exception hierarchy of omi-build. Only the CLI turns these into output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class Issue:
    """One located problem in a manifest, ordered by file, then position."""

    file: str
    line: int
    col: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class OmiError(Exception):
    """Base of every error omi-build raises on purpose.

    Each class has a stable kebab-case `reference` (printed by `--format json`, for scripts to
    match on), and an exit code.
    """

    reference: ClassVar[str] = "omi-error"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ManifestError(OmiError):
    """One or more problems in omi.yaml files, all of them, sorted."""

    reference: ClassVar[str] = "manifest-invalid"
    exit_code: ClassVar[int] = 2

    def __init__(self, issues: list[Issue] | tuple[Issue, ...]) -> None:
        self.issues = tuple(sorted(issues))
        count = len(self.issues)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the manifest")


class WorkspaceError(OmiError):
    """A label or path that names no package or target."""

    reference: ClassVar[str] = "workspace-unknown"


class LockError(OmiError):
    """omi.lock is missing, stale, or cannot be resolved."""

    reference: ClassVar[str] = "lock-unusable"


class SecurityUpdatesError(LockError):
    """omi.lock pins Debian packages that have newer security updates (lock --check --security)."""

    reference: ClassVar[str] = "lock-security-updates"
    exit_code: ClassVar[int] = 3


class FetchError(OmiError):
    """A download failed or did not match its recorded digest."""

    reference: ClassVar[str] = "fetch-failed"


class CacheError(OmiError):
    """The cache cannot be cleaned now (a build is using it)."""

    reference: ClassVar[str] = "cache-busy"


class BuildError(OmiError):
    """An image could not be assembled."""

    reference: ClassVar[str] = "build-failed"


class PackageFileError(BuildError):
    """A model file that is a link, a special file or outside the package (see manifest.files)."""

    reference: ClassVar[str] = "package-file-refused"


class LayoutError(OmiError):
    """An OCI image layout that is missing, not a layout, or damaged."""

    reference: ClassVar[str] = "layout-invalid"


class RegistryError(OmiError):
    """A registry that cannot be reached, refuses the credentials, or refuses or lacks what
    was pushed or asked for."""

    reference: ClassVar[str] = "registry-failed"


class RegistryConnectionError(RegistryError):
    """The connection to a registry broke on every try (or on the one try an upload's chunk gets)."""

    reference: ClassVar[str] = "registry-connection-broken"


class DeployError(OmiError):
    """A deployment description that would not deploy, or an image deploy cannot describe."""

    reference: ClassVar[str] = "deploy-invalid"


class RunError(OmiError):
    """The image did not start serving."""

    reference: ClassVar[str] = "run-failed"


class ToolError(OmiError):
    """An external program (buildah, skopeo, umoci, runc, uv, gpgv) failed or is missing."""

    reference: ClassVar[str] = "tool-failed"


class SigningKeyError(OmiError):
    """A signing or verification key that cannot be read, decrypted or used."""

    reference: ClassVar[str] = "key-unusable"


class SigningError(OmiError):
    """An image or its attestations could not be signed (or the signing service refused)."""

    reference: ClassVar[str] = "signing-failed"


class VerificationError(OmiError):
    """A signature, attestation, SBOM or digest that does not verify; names what failed."""

    reference: ClassVar[str] = "verification-failed"
    exit_code: ClassVar[int] = 4

    def __init__(self, message: str, *, hint: str | None = None, verified: tuple[object, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.verified = verified  # what had verified before this failed, for the report


class ModelSignatureError(BuildError):
    """The model files' signature (model.signature in the manifest) does not verify."""

    reference: ClassVar[str] = "model-signature-invalid"


class PolicyError(BuildError):
    """A rule of the manifest's security policy is broken; nothing was written to the output.
    `results` holds every rule checked so far, for `omi-build policy` to print."""

    reference: ClassVar[str] = "policy-violation"

    def __init__(self, message: str, *, hint: str | None = None, results: tuple[object, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.results = results
