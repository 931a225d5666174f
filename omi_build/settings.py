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


def source_date_epoch(manifest_value: int) -> int:
    """SOURCE_DATE_EPOCH from the environment wins over the manifest (reproducible-builds.org)."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value and value.isdigit():
        return int(value)
    return manifest_value
