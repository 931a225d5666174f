"""The typed, immutable view of a validated omi.yaml.

The JSON Schema is the contract; these classes mirror it field for field (a test fails when a
schema property has no field here) and carry the schema's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Accelerator = Literal["cpu", "cuda"]
Protocol = Literal["omi-v1", "oip-v2"]
Compression = Literal["gzip", "zstd"]

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
    outputs: dict[str, Any]
    tolerance: float = 1e-6


@dataclass(**_FROZEN)
class Model:
    entrypoint: str
    files: tuple[str, ...]
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    examples: tuple[Example, ...] = ()
    allow_links: bool = False

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


@dataclass(**_FROZEN)
class Base:
    debian: str = "bookworm"
    snapshot: str | None = None
    mirror: str | None = None
    security_mirror: str | None = None
    image: str | None = None


@dataclass(**_FROZEN)
class Build:
    base: Base = field(default_factory=Base)
    compression: Compression = "gzip"
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


def _tensor(raw: dict[str, Any]) -> Tensor:
    return Tensor(
        name=raw["name"],
        datatype=raw["datatype"],
        shape=tuple(raw["shape"]),
        media_types=tuple(raw.get("media_types", ())),
        max_bytes=raw.get("max_bytes"),
        description=raw.get("description", ""),
    )


def _pairs(raw: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((raw or {}).items()))


def from_data(path: Path, data: dict[str, Any]) -> Manifest:
    """Build a Manifest from schema-valid data (defaults filled in here)."""
    meta = data["metadata"]
    model = data["model"]
    python = data["python"]
    serving = data.get("serving", {})
    security = data.get("security", {})
    signing = security.get("signing")
    build = data.get("build", {})
    targets = data.get("targets") or {"cpu": {"accelerator": "cpu"}}
    return Manifest(
        path=path,
        api_version=data["apiVersion"],
        kind=data["kind"],
        metadata=Metadata(
            name=meta["name"],
            version=meta["version"],
            description=meta.get("description", ""),
            authors=tuple(meta.get("authors", ())),
            license=meta.get("license"),
            labels=_pairs(meta.get("labels")),
        ),
        model=Model(
            entrypoint=model["entrypoint"],
            files=tuple(model["files"]),
            allow_links=model.get("allow_links", False),
            inputs=tuple(_tensor(t) for t in model["inputs"]),
            outputs=tuple(_tensor(t) for t in model["outputs"]),
            examples=tuple(
                Example(
                    name=example.get("name", f"example {index + 1}"),
                    inputs=example["inputs"],
                    outputs=example.get("outputs", {}),
                    tolerance=example.get("tolerance", 1e-6),
                )
                for index, example in enumerate(model.get("examples", ()))
            ),
        ),
        python=Python(
            version=python["version"],
            requirements=tuple(python.get("requirements", ())),
            requirements_file=python.get("requirements_file"),
        ),
        system=System(packages=tuple(data.get("system", {}).get("packages", ()))),
        targets=tuple(
            Target(
                name=name,
                accelerator=raw["accelerator"],
                cuda=raw.get("cuda"),
                platforms=tuple(raw.get("platforms", ("linux/amd64",))),
                requirements=tuple(raw.get("requirements", ())),
                indexes=tuple(raw.get("indexes", ())),
            )
            for name, raw in sorted(targets.items())
        ),
        serving=Serving(
            port=serving.get("port", 45000),
            protocols=tuple(serving.get("protocols", ("omi-v1", "oip-v2"))),
            batching=Batching(**serving.get("batching", {})),
            max_message_bytes=serving.get("max_message_bytes", 64 * 1024 * 1024),
            timeouts=Timeouts(**serving.get("timeouts", {})),
            concurrency=Concurrency(**serving.get("concurrency", {})),
        ),
        security=Security(
            user=security.get("user", 65532),
            allow_source_builds=security.get("allow_source_builds", False),
            licenses=Licenses(
                allow=tuple(security.get("licenses", {}).get("allow", ())),
                deny=tuple(security.get("licenses", {}).get("deny", ())),
            ),
            max_image_size=security.get("max_image_size"),
            signing=None
            if signing is None
            else Signing(
                required=signing.get("required", True),
                keyless=Keyless(**signing["keyless"]) if "keyless" in signing else None,
                public_key=signing.get("public_key"),
            ),
        ),
        build=Build(
            base=Base(**build.get("base", {})),
            compression=build.get("compression", "gzip"),
            source_date_epoch=build.get("source_date_epoch", 0),
            labels=_pairs(build.get("labels")),
        ),
    )
