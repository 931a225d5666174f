"""Registry credentials, read from where docker, podman, buildah and skopeo keep them.

Order, first match wins: OMI_REGISTRY_USERNAME / OMI_REGISTRY_PASSWORD (CI secrets), then
REGISTRY_AUTH_FILE, containers' auth.json ($XDG_RUNTIME_DIR/containers, ~/.config/containers),
docker's config.json ($DOCKER_CONFIG, ~/.docker). In each file a per-registry credential
helper (`credHelpers`), then the entry in `auths` (by repository path, longest first, as
podman allows, then by host), then the file's `credsStore` helper.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omi_build.errors import RegistryError

# docker's config names Docker Hub by its old v1 URL.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT_S = 30


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """A user name and password, or an OAuth2 refresh token (docker's `identitytoken`)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    source: str = ""  # where they came from, for error messages

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, source={self.source!r})"


def auth_files() -> list[Path]:
    """The auth files read, in order (existing or not)."""
    files = []
    if explicit := os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(explicit))
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(runtime) / "containers" / "auth.json")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    files.append(config / "containers" / "auth.json")
    docker = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    files.append(docker / "config.json")
    return files


def _keys_for(registry: str, repository: str) -> list[str]:
    path = f"{registry}/{repository}".split("/")
    keys = ["/".join(path[:n]) for n in range(len(path), 1, -1)]  # host/a/b, host/a
    hosts = _DOCKER_HUB_KEYS if registry in _DOCKER_HUB_KEYS else (registry,)
    for host in hosts:
        keys += [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    return keys


def _from_entry(entry: Any, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if token := entry.get("identitytoken"):
        return Credentials(identity_token=str(token), source=source)
    if encoded := entry.get("auth"):
        try:
            user, _, password = base64.b64decode(str(encoded), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            msg = f"{source}: the 'auth' entry is not base64 of user:password"
            raise RegistryError(msg, hint="log in again (docker login, podman login)") from exc
        return Credentials(username=user, password=password, source=source)
    if entry.get("username"):
        return Credentials(
            username=str(entry["username"]), password=str(entry.get("password", "")), source=source
        )
    return None


def _helper(name: str, registry: str, source: str) -> Credentials | None:
    program = shutil.which(f"docker-credential-{name}")
    if program is None:
        msg = f"{source} names the credential helper '{name}', but docker-credential-{name} is not on PATH"
        raise RegistryError(msg, hint="install the helper, or remove it from the file")
    try:
        answer = subprocess.run(
            [program, "get"],
            input=registry,
            capture_output=True,
            text=True,
            timeout=_HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"the credential helper docker-credential-{name} failed: {exc}"
        raise RegistryError(msg) from exc
    if answer.returncode != 0:
        if "not found" in (answer.stdout + answer.stderr).lower():
            return None  # the helper holds nothing for this registry
        said = answer.stderr.strip() or answer.stdout.strip()
        msg = f"the credential helper docker-credential-{name} failed: {said}"
        raise RegistryError(msg)
    try:
        raw = json.loads(answer.stdout)
        user, secret = str(raw["Username"]), str(raw["Secret"])
    except (ValueError, KeyError, TypeError) as exc:
        msg = f"docker-credential-{name} answered something other than {{Username, Secret}}"
        raise RegistryError(msg) from exc
    what = f"docker-credential-{name}"
    if user == "<token>":
        return Credentials(identity_token=secret, source=what)
    return Credentials(username=user, password=secret, source=what)


def _from_file(path: Path, registry: str, repository: str) -> Credentials | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"cannot read the registry auth file {path}: {exc}"
        raise RegistryError(
            msg, hint="fix or remove the file, or point REGISTRY_AUTH_FILE at another"
        ) from exc
    if not isinstance(raw, dict):
        return None
    helpers = raw.get("credHelpers") or {}
    auths = raw.get("auths") or {}
    for key in _keys_for(registry, repository):
        if isinstance(helpers, dict) and key in helpers:
            return _helper(str(helpers[key]), registry, str(path))
        if isinstance(auths, dict) and key in auths:
            found = _from_entry(auths[key], str(path))
            if found is not None:
                return found
    if store := raw.get("credsStore"):
        return _helper(str(store), registry, str(path))
    return None


def credentials(registry: str, repository: str) -> Credentials | None:
    """The credentials for `registry` (host[:port]) and `repository`, or None (anonymous)."""
    user = os.environ.get("OMI_REGISTRY_USERNAME")
    password = os.environ.get("OMI_REGISTRY_PASSWORD")
    if user and password is not None:
        return Credentials(username=user, password=password, source="OMI_REGISTRY_USERNAME/PASSWORD")
    for path in auth_files():
        found = _from_file(path, registry, repository)
        if found is not None:
            return found
    return None
