"""What a build gives back: each target's layout and images, and the policy's rule by rule
outcome. Plain data, importing nothing of omi-build's, so an up-to-date check can hand it back
without loading the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    """One rule's outcome: `checked` says over what, `found` what it saw; `offending` (empty
    when it passed) names each item that breaks it, and `hint` how to allow them."""

    rule: str
    platform: str  # "" for rules about the model files or the manifest
    checked: str
    found: str
    offending: tuple[str, ...] = ()
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.offending


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltImage:
    """One platform's image of a built target."""

    label: str
    target: str
    platform: str
    digest: str
    index: str
    layout: Path
    size: int
    compressed_size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class BuiltTarget:
    """One target's layout: its index and each platform's image."""

    label: str
    target: str
    layout: Path
    index: str
    images: tuple[BuiltImage, ...]
    policy: tuple[Result, ...] = ()  # every rule, as checked before the layout was written
