"""Files that look like credentials, by name and by content.

Names: private keys as ssh and tools name them, .env files, cloud and registry credential
files, anything under .git/. Contents (the first MiB of each file, as text where it decodes):
PEM private keys, and tokens whose format is fixed and distinctive (AWS access keys, GitHub,
GitLab, Slack, Google API, Hugging Face, OpenAI, Stripe). Look-alikes pass: public keys and
certificates, `tokenizer.json`, `.env.example`, words like 'token' or 'secret' alone.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

SCANNED_BYTES = 1024 * 1024

_KEY_NAMES = re.compile(r"^(id_(rsa|dsa|ecdsa|ed25519)(_sk)?|.*\.(ppk|p12|pfx|jks|keystore|kdbx))$")
_ENV = re.compile(r"^\.env(\.[A-Za-z0-9_-]+)?$")
_ENV_TEMPLATES = frozenset({".env.example", ".env.sample", ".env.template", ".env.dist"})
_CREDENTIAL_FILES = {
    ".netrc": "a .netrc (passwords for hosts)",
    "_netrc": "a .netrc (passwords for hosts)",
    ".pypirc": "a .pypirc (package index credentials)",
    ".npmrc": "an .npmrc (registry tokens)",
    ".git-credentials": "git credentials",
    "application_default_credentials.json": "Google Cloud credentials",
    "credentials.db": "Google Cloud credentials",
    "access_tokens.db": "Google Cloud credentials",
}
_CREDENTIAL_PATHS = {
    (".aws", "credentials"): "AWS credentials",
    (".aws", "config"): "AWS configuration",
    (".docker", "config.json"): "registry credentials",
    (".kube", "config"): "a Kubernetes credentials file",
    (".ssh", "config"): "an ssh configuration",
    (".azure", "accessTokens.json"): "Azure credentials",
}
# (pattern, what it finds, literals one of which every match holds): bytes.find looks for the
# literals at memory speed, and a pattern runs only where one is found, so the megabyte of
# a weights file costs milliseconds, not the tenth of a second the twelve patterns would.
_CONTENT = [
    (
        re.compile(
            rb"-----BEGIN ((RSA|DSA|EC|OPENSSH|ENCRYPTED|PGP|SIGSTORE|ENCRYPTED SIGSTORE"
            rb"|ENCRYPTED COSIGN) )?PRIVATE KEY( BLOCK)?-----"
        ),
        "a private key",
        (b"PRIVATE KEY",),
    ),
    (re.compile(rb"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id", (b"AKIA", b"ASIA")),
    (
        re.compile(rb"aws_secret_access_key\s*[=:]\s*[A-Za-z0-9/+]{40}"),
        "an AWS secret access key",
        (b"aws_secret_access_key",),
    ),
    (
        re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
        "a GitHub token",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
    ),
    (re.compile(rb"\bgithub_pat_[A-Za-z0-9_]{60,}\b"), "a GitHub token", (b"github_pat_",)),
    (re.compile(rb"\bglpat-[A-Za-z0-9_-]{20,}\b"), "a GitLab token", (b"glpat-",)),
    (re.compile(rb"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"), "a Slack token", (b"xox",)),
    (re.compile(rb"\bAIza[0-9A-Za-z_-]{35}\b"), "a Google API key", (b"AIza",)),
    (re.compile(rb"\bhf_[A-Za-z0-9]{34,}\b"), "a Hugging Face token", (b"hf_",)),
    (
        re.compile(rb"\bsk-(proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}\b"),
        "an OpenAI key",
        (b"T3BlbkFJ",),
    ),
    (re.compile(rb"\b[sr]k_live_[0-9A-Za-z]{24,}\b"), "a Stripe key", (b"k_live_",)),
    (
        re.compile(rb'"type"\s*:\s*"service_account"[\s\S]{0,4000}"private_key"'),
        "a Google service account key",
        (b'"service_account"',),
    ),
]


def looks_secret(name: str, path: Path) -> str | None:
    """Why the model file `name` (relative to omi.yaml) at `path` looks like a secret, or None."""
    parts = PurePosixPath(name).parts
    base = parts[-1]
    if ".git" in parts[:-1] or base == ".git":
        return "inside .git/"
    if _KEY_NAMES.match(base):
        return "named like a private key or key store"
    if _ENV.match(base) and base not in _ENV_TEMPLATES:
        return "a .env file"
    if base in _CREDENTIAL_FILES:
        return _CREDENTIAL_FILES[base]
    if len(parts) >= 2 and (parts[-2], base) in _CREDENTIAL_PATHS:
        return _CREDENTIAL_PATHS[parts[-2], base]
    try:
        with path.open("rb") as handle:
            head = handle.read(SCANNED_BYTES)
    except OSError:
        return None  # the build's own reading of the file reports it
    for pattern, what, literals in _CONTENT:
        if any(literal in head for literal in literals) and pattern.search(head):
            return f"holds {what}"
    return None
