"""Progress reporting: stages call a Progress; only the CLI decides whether and how it shows."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A stage started or finished something worth telling."""

    def transfer(self, name: str, done: int, total: int | None) -> None:
        """Bytes of `name` downloaded or compressed so far."""


class Silent:
    """The default: report nothing."""

    def step(self, message: str) -> None:
        pass

    def transfer(self, name: str, done: int, total: int | None) -> None:
        pass
