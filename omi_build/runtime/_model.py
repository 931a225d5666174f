"""Loading the model: the serving config, the file digests recorded at build, the author's class."""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _startup
from ._startup import StartupError, read_raw
from .tensors import TensorSpec

__all__ = ["Config", "StartupError", "load_model", "read_config", "verify_files"]


@dataclass(frozen=True, slots=True)
class Config:
    raw: dict[str, Any]
    directory: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def name(self) -> str:
        return str(self.raw["model"]["name"])

    @property
    def version(self) -> str:
        return str(self.raw["model"]["version"])

    @property
    def serving(self) -> dict[str, Any]:
        serving: dict[str, Any] = self.raw["serving"]
        return serving


def _spec(raw: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=raw["name"],
        datatype=raw["datatype"],
        shape=tuple(raw["shape"]),
        media_types=tuple(raw.get("media_types") or ()),
        max_bytes=raw.get("max_bytes"),
        description=raw.get("description") or "",
    )


def read_config(path: Path, directory: Path | None = None) -> Config:
    raw = read_raw(path)
    model = raw["model"]
    return Config(
        raw=raw,
        directory=directory or Path(model["directory"]),
        inputs=tuple(_spec(t) for t in model["inputs"]),
        outputs=tuple(_spec(t) for t in model["outputs"]),
    )


def verify_files(config: Config) -> None:
    """The model files are the ones the image was built with (see _startup.verify_files)."""
    _startup.verify_files(config.raw, config.directory)


def _takes_device(function: Any) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "device" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def load_model(config: Config, device: str = "cpu") -> Any:
    """Import the author's module, instantiate the class and call its load(model_dir) once.

    The model learns its device ("cpu" or "cuda:0") from OMI_DEVICE, set before its module is
    imported, and as load(model_dir, device=...) when its load takes that argument."""
    os.environ["OMI_DEVICE"] = device
    module_file = config.directory / config.raw["model"]["module"]
    class_name = config.raw["model"]["class"]
    if str(config.directory) not in sys.path:
        sys.path.insert(0, str(config.directory))  # the model may import its sibling modules
    spec = importlib.util.spec_from_file_location("omi_model", module_file)
    if spec is None or spec.loader is None:
        msg = f"cannot import {module_file}"
        raise StartupError(msg)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        msg = f"importing {module_file.name} failed: {type(exc).__name__}: {exc}"
        raise StartupError(msg) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        msg = f"{module_file.name} defines no class {class_name}"
        raise StartupError(msg)
    if not callable(getattr(cls, "predict", None)):
        msg = f"{class_name} has no predict(self, inputs) method"
        raise StartupError(msg)
    try:
        instance = cls()
        loader = getattr(instance, "load", None)
        if callable(loader):
            if _takes_device(loader):
                loader(config.directory, device=device)
            else:
                loader(config.directory)
    except Exception as exc:
        msg = f"{class_name}.load failed: {type(exc).__name__}: {exc}"
        raise StartupError(msg) from exc
    return instance
