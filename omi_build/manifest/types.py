"""The typed, immutable view of a validated omi.yaml.

The JSON Schema is the contract; these classes mirror it field for field (a test fails when a
schema property has no field here) and carry the schema's defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omi_build.suites import DEFAULT_SUITE

Accelerator = Literal["cpu", "cuda"]
Protocol = Literal["omi-v1", "oip-v2"]
Compression = Literal["auto", "gzip", "zstd"]

# No slots: slotted dataclasses are rebuilt at import, 25 ms on every start of the CLI.
_FROZEN = {"frozen": True, "kw_only": True}


@dataclass(**_FROZEN)
class Metadata:
    name: str
    version: str
    description: str = ""
    authors: tuple[str, ...] = ()
    license: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(**_FROZEN)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    media_types: tuple[str, ...] = ()
    max_bytes: int | None = None
    description: str = ""


@dataclass(**_FROZEN)
class Example:
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    tolerance: float = 1e-6


@dataclass(**_FROZEN)
class Model:
    entrypoint: str
    files: tuple[str, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    examples: tuple[Example, ...] = ()
    allow_links: bool = False
    signature: ModelSignature | None = None

    @property
    def module_file(self) -> str:
        return self.entrypoint.rsplit(":", 1)[0]

    @property
    def class_name(self) -> str:
        return self.entrypoint.rsplit(":", 1)[1]


@dataclass(**_FROZEN)
class Python:
    version: str
    requirements: tuple[str, ...] = ()
    requirements_file: str | None = None


@dataclass(**_FROZEN)
class System:
    packages: tuple[str, ...] = ()


@dataclass(**_FROZEN)
class Target:
    name: str
    accelerator: Accelerator
    cuda: str | None = None
    platforms: tuple[str, ...] = ("linux/amd64",)
    requirements: tuple[str, ...] = ()
    indexes: tuple[str, ...] = ()


@dataclass(**_FROZEN)
class Batching:
    max_batch_size: int = 32
    max_wait_ms: float = 2.0


@dataclass(**_FROZEN)
class Timeouts:
    startup_s: float = 300.0
    request_s: float = 60.0
    drain_s: float = 30.0
    stream_idle_s: float = 60.0


@dataclass(**_FROZEN)
class Concurrency:
    max_in_flight: int = 256
    workers: int = 1
    # server processes on the port: "auto" is the CPUs the container may use (1 on a GPU)
    processes: int | Literal["auto"] = "auto"


@dataclass(**_FROZEN)
class Serving:
    port: int = 45000
    protocols: tuple[Protocol, ...] = ("omi-v1", "oip-v2")
    batching: Batching = field(default_factory=Batching)
    max_message_bytes: int = 64 * 1024 * 1024
    timeouts: Timeouts = field(default_factory=Timeouts)
    concurrency: Concurrency = field(default_factory=Concurrency)


@dataclass(**_FROZEN)
class Licenses:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()


@dataclass(**_FROZEN)
class Keyless:
    identity: str
    issuer: str


@dataclass(**_FROZEN)
class ModelSignature:
    """Who signed the model files (model.signature): the signature file and the signer."""

    file: str
    public_key: str | None = None
    keyless: Keyless | None = None


@dataclass(**_FROZEN)
class Signing:
    required: bool = True
    keyless: Keyless | None = None
    public_key: str | None = None


@dataclass(**_FROZEN)
class Security:
    user: int = 65532
    allow_source_builds: bool = False
    licenses: Licenses = field(default_factory=Licenses)
    max_image_size: str | None = None
    signing: Signing | None = None
    allow_secret_files: tuple[str, ...] = ()


@dataclass(**_FROZEN)
class Base:
    debian: str = DEFAULT_SUITE
    snapshot: str | None = None
    mirror: str | None = None
    security_mirror: str | None = None
    image: str | None = None


@dataclass(**_FROZEN)
class Build:
    base: Base = field(default_factory=Base)
    compression: Compression = "auto"
    source_date_epoch: int = 0
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(**_FROZEN)
class Manifest:
    """A validated omi.yaml. `path` is the file; `directory` holds the model's files."""

    path: Path
    api_version: str
    kind: str
    metadata: Metadata
    model: Model
    python: Python
    system: System
    targets: tuple[Target, ...]
    serving: Serving
    security: Security
    build: Build

    @property
    def directory(self) -> Path:
        return self.path.parent

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


# What a manifest without `targets` builds (the schema's default, spelled once in Python).
DEFAULT_TARGETS: dict[str, dict[str, Any]] = {"cpu": {"accelerator": "cpu"}}


def _given(raw: dict[str, Any], **convert: Callable[[Any], Any]) -> dict[str, Any]:
    """The fields a manifest sets, converted: each dataclass's own default covers the rest, so
    no default is written here a second time."""
    return {key: convert[key](value) if key in convert else value for key, value in raw.items()}


def _pairs(raw: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(raw.items()))


def _tensor(raw: dict[str, Any]) -> Tensor:
    return Tensor(**_given(raw, shape=tuple, media_types=tuple))


def _tensors(raw: list[dict[str, Any]]) -> tuple[Tensor, ...]:
    return tuple(_tensor(t) for t in raw)


def _examples(raw: list[dict[str, Any]]) -> tuple[Example, ...]:
    return tuple(Example(**{"name": f"example {n + 1}", **example}) for n, example in enumerate(raw))


def _signing(raw: dict[str, Any]) -> Signing:
    return Signing(**_given(raw, keyless=lambda k: Keyless(**k)))


def from_data(path: Path, data: dict[str, Any]) -> Manifest:
    """Build a Manifest from schema-valid data (the dataclasses hold the defaults)."""
    targets = data.get("targets") or DEFAULT_TARGETS
    return Manifest(
        path=path,
        api_version=data["apiVersion"],
        kind=data["kind"],
        metadata=Metadata(**_given(data["metadata"], authors=tuple, labels=_pairs)),
        model=Model(
            **_given(
                data["model"],
                files=tuple,
                inputs=_tensors,
                outputs=_tensors,
                examples=_examples,
                signature=lambda raw: ModelSignature(**_given(raw, keyless=lambda k: Keyless(**k))),
            )
        ),
        python=Python(**_given(data["python"], requirements=tuple)),
        system=System(**_given(data.get("system", {}), packages=tuple)),
        targets=tuple(
            Target(name=name, **_given(raw, platforms=tuple, requirements=tuple, indexes=tuple))
            for name, raw in sorted(targets.items())
        ),
        serving=Serving(
            **_given(
                data.get("serving", {}),
                protocols=tuple,
                batching=lambda raw: Batching(**raw),
                timeouts=lambda raw: Timeouts(**raw),
                concurrency=lambda raw: Concurrency(**raw),
            )
        ),
        security=Security(
            **_given(
                data.get("security", {}),
                licenses=lambda raw: Licenses(**_given(raw, allow=tuple, deny=tuple)),
                signing=_signing,
                allow_secret_files=tuple,
            )
        ),
        build=Build(**_given(data.get("build", {}), base=lambda raw: Base(**raw), labels=_pairs)),
    )
