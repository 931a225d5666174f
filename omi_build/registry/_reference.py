"""Image references: `[host[:port]/]repository[:tag][@sha256:<hex>]`, as docker parses them."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from omi_build.errors import RegistryError

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?")


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    registry: str  # host[:port], as written
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            registry, path = first, remainder
        else:
            registry, path = DOCKER_HUB, rest
            if "/" not in path:
                path = f"library/{path}"
        repository, tag = path, None
        if ":" in path.rsplit("/", 1)[-1]:
            repository, _, tag = path.rpartition(":")
        problem = ""
        if not _HOST.fullmatch(registry):
            problem = f"'{registry}' is not a registry host[:port]"
        elif not _REPOSITORY.fullmatch(repository):
            problem = f"'{repository}' is not a repository name (lower case, digits, . _ - and /)"
        elif tag is not None and not _TAG.fullmatch(tag):
            problem = f"'{tag}' is not a tag (up to 128 of A-Z a-z 0-9 _ . -)"
        elif digest and not _DIGEST.fullmatch(digest):
            problem = f"'{digest}' is not a sha256 digest"
        if problem:
            msg = f"bad image reference '{text}': {problem}"
            raise RegistryError(msg, hint="write it as host[:port]/repository[:tag][@sha256:...]")
        return cls(registry=registry, repository=repository, tag=tag, digest=digest or None)

    @property
    def host(self) -> str:
        """The host without the port."""
        if self.registry.startswith("["):
            return self.registry[1:].split("]", 1)[0]
        return self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry

    @property
    def api(self) -> str:
        """Where the registry's API answers (Docker Hub's differs from its name)."""
        return "registry-1.docker.io" if self.registry == DOCKER_HUB else self.registry

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def name(self) -> str:
        """registry/repository, no tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    @property
    def identifier(self) -> str:
        """What the manifests endpoint takes: the digest if given, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def looks_like_reference(text: str) -> bool:
    """Whether `text` names an image in a registry rather than a path or a label: its first
    component is a host (has a dot or a port, or is localhost) and it is not a path here."""
    if text.startswith(("/", ".", ":")) or "/" not in text:
        return False
    first = text.split("/", 1)[0]
    return "." in first or ":" in first or first == "localhost"
