"""Where omi-build keeps its cache and which certificates it trusts; read from the environment."""

from __future__ import annotations

import os
import ssl
from functools import cache
from pathlib import Path

# Corporate networks (and these build machines) re-sign HTTPS with a local CA that only the
# host's store knows; Python's bundled defaults may not include it.
_HOST_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def cache_dir() -> Path:
    """OMI_BUILD_CACHE, else $XDG_CACHE_HOME/omi-build, else ~/.cache/omi-build."""
    explicit = os.environ.get("OMI_BUILD_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "omi-build"


@cache
def ssl_context() -> ssl.SSLContext:
    """TLS context trusting the host's CA store (SSL_CERT_FILE and PIP_CERT are honoured)."""
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        candidate = os.environ.get(variable)
        if candidate and Path(candidate).is_file():
            return ssl.create_default_context(cafile=candidate)
    for candidate in _HOST_CA_FILES:
        if Path(candidate).is_file():
            return ssl.create_default_context(cafile=candidate)
    return ssl.create_default_context()


def debian_mirror() -> str | None:
    """OMI_DEBIAN_MIRROR: the Debian mirror for the suite and -updates, if the manifest names none."""
    return os.environ.get("OMI_DEBIAN_MIRROR") or None


def debian_security_mirror() -> str | None:
    """OMI_DEBIAN_SECURITY_MIRROR: the mirror of Debian's security archive."""
    return os.environ.get("OMI_DEBIAN_SECURITY_MIRROR") or None


def debian_snapshot_url() -> str | None:
    """OMI_DEBIAN_SNAPSHOT_URL: a snapshot mirror's URL with a {snapshot} placeholder."""
    return os.environ.get("OMI_DEBIAN_SNAPSHOT_URL") or None


def debian_security_snapshot_url() -> str | None:
    """OMI_DEBIAN_SECURITY_SNAPSHOT_URL: the same for the security archive."""
    return os.environ.get("OMI_DEBIAN_SECURITY_SNAPSHOT_URL") or None


def github_actions() -> bool:
    """GITHUB_ACTIONS=true: problems are also printed as annotations on the pull request."""
    return os.environ.get("GITHUB_ACTIONS") == "true"


DEFAULT_NETWORK_TIMEOUT_S = 15.0
DEFAULT_NETWORK_ATTEMPTS = 3


def _positive(variable: str, default: float) -> float:
    value = os.environ.get(variable, "")
    try:
        number = float(value)
    except ValueError:
        return default
    return number if number > 0 else default


def network_timeout_s() -> float:
    """OMI_NETWORK_TIMEOUT: seconds a mirror or index may stay silent before an attempt fails."""
    return _positive("OMI_NETWORK_TIMEOUT", DEFAULT_NETWORK_TIMEOUT_S)


def network_attempts() -> int:
    """OMI_NETWORK_ATTEMPTS: tries of each download before it fails (default 3).

    With the defaults a mirror that accepts connections and never answers fails a build in
    about 47 s (3 x 15 s, plus 1.5 s between tries); a slow download that keeps moving never
    times out."""
    return int(_positive("OMI_NETWORK_ATTEMPTS", DEFAULT_NETWORK_ATTEMPTS))


def source_date_epoch(manifest_value: int) -> int:
    """SOURCE_DATE_EPOCH from the environment wins over the manifest (reproducible-builds.org)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value and value.isdigit():
        return int(value)
    return manifest_value


def cosign_password() -> bytes | None:
    """The password of a cosign key, as cosign reads it (COSIGN_PASSWORD); None: ask for it."""
    value = os.environ.get("COSIGN_PASSWORD")
    return None if value is None else value.encode()


def identity_token() -> str | None:
    """An OIDC token for keyless signing given by the environment (SIGSTORE_ID_TOKEN)."""
    return os.environ.get("SIGSTORE_ID_TOKEN") or None
