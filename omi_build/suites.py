"""The Debian suites an image may be based on, and what each fixes: its Python, its glibc (the
newest manylinux tag its wheels may carry) and the packages a Python base needs (names change
with Debian's t64 transition). The manifest's checks, the lock and the wheel resolver read them
here; the schema's enum of `build.base.debian` is tested against `SUITES`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True, slots=True)
class Suite:
    name: str
    python: str
    glibc: str  # as manylinux tags write it, e.g. "2_36"
    base_packages: tuple[str, ...]


def _base(python: str, libssl: str) -> tuple[str, ...]:
    return (
        "base-files", "netbase", "tzdata", "ca-certificates", "media-types", "libc6", "libgcc-s1",
        "libstdc++6", libssl, "zlib1g",
        f"python{python}-minimal", f"libpython{python}-minimal", f"libpython{python}-stdlib",
    )  # fmt: skip


SUITES = {
    suite.name: suite
    for suite in (
        Suite(name="bookworm", python="3.11", glibc="2_36", base_packages=_base("3.11", "libssl3")),
        Suite(name="trixie", python="3.13", glibc="2_41", base_packages=_base("3.13", "libssl3t64")),
    )
}
DEFAULT_SUITE = "bookworm"
