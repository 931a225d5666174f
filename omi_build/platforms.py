"""Platforms: the architectures images are built for, and the one this machine runs.

>>> arch_of("linux/arm64/v8")
'arm64'
"""

from __future__ import annotations

import platform as _platform

SUPPORTED_ARCHITECTURES = ("amd64", "arm64")
# What people write for them: a manifest's 'linux/x86_64' gets "did you mean 'linux/amd64'?".
ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "x64": "amd64", "aarch64": "arm64"}
_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def arch_of(platform: str) -> str:
    """The architecture of an 'os/arch[/variant]' platform."""
    return platform.split("/")[1]


def host_arch() -> str | None:
    """This machine's architecture as Debian and OCI name it, if images are built for it."""
    return _MACHINE.get(_platform.machine().lower())


def host_machine() -> str:
    """This machine's architecture, named even when no image is built for it (for messages)."""
    return host_arch() or _platform.machine().lower()


def host_platform() -> str | None:
    arch = host_arch()
    return f"linux/{arch}" if arch else None
