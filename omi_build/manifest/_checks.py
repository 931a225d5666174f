"""Checks the JSON Schema cannot express: files on disk, names, cross-references.

Each check is defensive about types: it runs even where the schema stage found problems, so
the author sees every problem at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path as FsPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from omi_build.platforms import ARCH_ALIASES, SUPPORTED_ARCHITECTURES
from omi_build.suites import DEFAULT_SUITE, SUITES

from . import files
from ._entrypoint import check_entrypoint, relative_problem
from ._report import Reporter, suggest
from ._yaml import Path


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _allow_links(model: dict[str, Any]) -> bool:
    return model.get("allow_links") is True


def _check_files(model: dict[str, Any], base: FsPath, entry_file: str | None, report: Reporter) -> None:
    covered = False
    allow_links = _allow_links(model)
    for index, pattern in enumerate(_list(model.get("files"))):
        if not isinstance(pattern, str) or not pattern:
            continue
        path: Path = ("model", "files", index)
        problem = relative_problem(pattern)
        if problem:
            report.add(path, f"'{pattern}' {problem}")
            continue
        try:
            selection = files.select(base, [pattern], allow_links=allow_links)
        except (OSError, ValueError) as exc:
            report.add(path, f"'{pattern}' cannot be matched: {exc}")
            continue
        for refused, why in selection.refused.items():
            report.add(path, f"'{refused}' (matched by '{pattern}') {why}")
        if not selection.files and not selection.refused:
            report.add(path, f"'{pattern}' matches no file; check the name or remove the pattern")
        if entry_file is not None and entry_file in selection.files:
            covered = True
    if entry_file is not None and not covered and _list(model.get("files")):
        report.add(
            ("model", "files"),
            f"the entrypoint file '{entry_file}' is not among the files; add it to model.files",
        )


def _check_named_file(path: Path, name: str, base: FsPath, report: Reporter, *, allow_links: bool) -> None:
    """A file the manifest names by path (requirements file, public key): inside, regular."""
    problem = relative_problem(name)
    if problem:
        report.add(path, f"'{name}' {problem}")
        return
    problem = files.problem_with(base, name, allow_links=allow_links)
    if problem == "does not exist":
        report.add(path, f"'{name}' does not exist next to omi.yaml")
    elif problem:
        report.add(path, f"'{name}' {problem}")


def _unique_names(section: str, tensors: list[Any], report: Reporter) -> dict[str, dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for index, tensor in enumerate(tensors):
        name = _dict(tensor).get("name")
        if not isinstance(name, str):
            continue
        if name in by_name:
            report.add(("model", section, index, "name"), f"'{name}' is declared twice; rename one")
        else:
            by_name[name] = tensor
    return by_name


def _shape_of(value: Any) -> tuple[list[int], bool]:
    """The shape of a nested list and whether it is rectangular."""
    if not isinstance(value, list):
        return [], True
    if not value:
        return [0], True
    inner = [_shape_of(item) for item in value]
    first = inner[0][0]
    regular = all(ok and shape == first for shape, ok in inner)
    return [len(value), *first], regular


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _leaf_fits(datatype: str, leaf: Any) -> bool:
    if datatype == "BOOL":
        return isinstance(leaf, bool)
    if datatype == "BYTES":
        return isinstance(leaf, str)
    if isinstance(leaf, bool):
        return False
    if datatype.startswith(("INT", "UINT")):
        return isinstance(leaf, int) and (datatype.startswith("INT") or leaf >= 0)
    return isinstance(leaf, int | float)


def _check_tensor_value(path: Path, tensor: dict[str, Any], value: Any, report: Reporter) -> None:
    datatype = tensor.get("datatype")
    declared = tensor.get("shape")
    if not isinstance(datatype, str) or not isinstance(declared, list):
        return
    shape, regular = _shape_of(value)
    if not regular:
        report.add(path, "rows have different lengths; a tensor must be rectangular")
        return
    if len(shape) != len(declared) or any(
        isinstance(want, int) and want not in {-1, got} for want, got in zip(declared, shape, strict=False)
    ):
        shown = "x".join(str(dim) for dim in shape) or "a single value"
        wanted = "x".join("N" if dim == -1 else str(dim) for dim in declared)
        report.add(path, f"has shape {shown}, but the tensor is declared as {wanted}")
        return
    for leaf in _leaves(value):
        if not _leaf_fits(datatype, leaf):
            report.add(path, f"holds {leaf!r}, which is not a {datatype} value")
            return


def _check_examples(
    model: dict[str, Any],
    inputs: dict[str, dict[str, Any]],
    outputs: dict[str, dict[str, Any]],
    report: Reporter,
) -> None:
    for index, example in enumerate(_list(model.get("examples"))):
        example_dict = _dict(example)
        for section, declared in (("inputs", inputs), ("outputs", outputs)):
            given = example_dict.get(section)
            if not isinstance(given, dict):
                continue
            for name, value in given.items():
                path: Path = ("model", "examples", index, section, name)
                if name not in declared:
                    report.add(
                        path,
                        f"no {section[:-1]} named '{name}' is declared{suggest(name, declared)}",
                        at_key=True,
                    )
                    continue
                _check_tensor_value(path, declared[name], value, report)
            if section == "inputs":
                for name in declared:
                    if name not in given:
                        report.add(
                            ("model", "examples", index, "inputs"),
                            f"input '{name}' is missing from this example",
                        )


def _check_model(data: dict[str, Any], base: FsPath, report: Reporter) -> None:
    model = _dict(data.get("model"))
    entry_file = check_entrypoint(model, base, report)
    _check_files(model, base, entry_file, report)
    inputs = _unique_names("inputs", _list(model.get("inputs")), report)
    outputs = _unique_names("outputs", _list(model.get("outputs")), report)
    _check_examples(model, inputs, outputs, report)


def _check_platform(path: Path, platform: str, report: Reporter) -> None:
    parts = platform.split("/")
    if len(parts) < 2:
        return
    os_name, arch = parts[0], parts[1]
    if os_name != "linux":
        report.add(path, f"'{platform}': only linux images are built; write linux/{arch}")
        return
    if arch not in SUPPORTED_ARCHITECTURES:
        fix = ARCH_ALIASES.get(arch)
        advice = (
            f"; did you mean 'linux/{fix}'?"
            if fix
            else suggest(arch, SUPPORTED_ARCHITECTURES)
            or f"; supported: {', '.join('linux/' + a for a in SUPPORTED_ARCHITECTURES)}"
        )
        report.add(path, f"'{platform}' is not a supported platform{advice}")
        return
    if len(parts) == 3 and not (arch == "arm64" and parts[2] == "v8"):
        report.add(path, f"'{platform}': unknown variant '{parts[2]}' for {arch}")


def _check_requirements(path: Path, requirements: list[Any], report: Reporter) -> None:
    for index, text in enumerate(requirements):
        if not isinstance(text, str):
            continue
        try:
            Requirement(text)
        except InvalidRequirement as exc:
            first_line = str(exc).splitlines()[0]
            report.add((*path, index), f"'{text}' is not a valid requirement: {first_line}")


def _check_targets(data: dict[str, Any], report: Reporter) -> None:
    for name, target in _dict(data.get("targets")).items():
        target_dict = _dict(target)
        path: Path = ("targets", name)
        accelerator = target_dict.get("accelerator")
        if accelerator == "cuda" and "cuda" not in target_dict:
            report.add(
                path,
                'a cuda target needs a CUDA version; add cuda: "12.4" (for example)',
                at_key=True,
            )
        if accelerator == "cpu" and "cuda" in target_dict:
            report.add(
                (*path, "cuda"),
                "a cpu target takes no CUDA version; remove it or set accelerator: cuda",
                at_key=True,
            )
        for index, platform in enumerate(_list(target_dict.get("platforms"))):
            if isinstance(platform, str):
                _check_platform((*path, "platforms", index), platform, report)
        _check_requirements((*path, "requirements"), _list(target_dict.get("requirements")), report)


def _check_python(data: dict[str, Any], base: FsPath, report: Reporter) -> None:
    python = _dict(data.get("python"))
    _check_requirements(("python", "requirements"), _list(python.get("requirements")), report)
    req_file = python.get("requirements_file")
    if isinstance(req_file, str) and req_file:
        allow_links = _allow_links(_dict(data.get("model")))
        _check_named_file(("python", "requirements_file"), req_file, base, report, allow_links=allow_links)
    base_section = _dict(_dict(data.get("build")).get("base"))
    version = python.get("version")
    if "image" in base_section or not isinstance(version, str):
        return
    suite = base_section.get("debian", DEFAULT_SUITE)
    wanted = SUITES[suite].python if isinstance(suite, str) and suite in SUITES else None
    if wanted is not None and version != wanted:
        others = [s.name for s in SUITES.values() if s.python == version]
        fix = f" or build.base.debian to {others[0]}" if others else ""
        report.add(
            ("python", "version"),
            f'Debian {suite} ships Python {wanted}, not {version}; set python.version to "{wanted}"{fix}',
        )


@cache
def _spdx() -> Any:
    from license_expression import get_spdx_licensing  # noqa: PLC0415 - 100 ms, only when used

    return get_spdx_licensing()


def _normalise_license(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower()).replace("only", "")


def _suggest_license(text: str, known: Iterable[str]) -> str:
    by_key: dict[str, str] = {}
    for name in known:
        if name.upper() == name.upper().replace("+", "") and not name.startswith("LicenseRef"):
            by_key.setdefault(_normalise_license(name), name)
    key = _normalise_license(text)
    if key in by_key:
        return f"; did you mean '{by_key[key]}'?"
    matches = difflib.get_close_matches(key, list(by_key), n=1, cutoff=0.75)
    return f"; did you mean '{by_key[matches[0]]}'?" if matches else " (see the SPDX license list)"


def _named_elsewhere(license_id: str) -> bool:
    """A policy name that is not on the SPDX list but is how an SBOM names a license: a
    LicenseRef (NVIDIA's wheels, Debian's own names) or NOASSERTION (none could be found)."""
    return license_id == "NOASSERTION" or (
        license_id.startswith("LicenseRef-") and len(license_id) > len("LicenseRef-")
    )


def _check_licenses(data: dict[str, Any], report: Reporter) -> None:
    license_text = _dict(data.get("metadata")).get("license")
    if isinstance(license_text, str) and license_text.strip():
        try:
            info = _spdx().validate(license_text)
        except Exception:  # noqa: BLE001 - license-expression fails on some texts with its own bugs
            report.add(
                ("metadata", "license"),
                f"'{license_text}' is not a valid SPDX expression; "
                "write an SPDX identifier such as BSD-3-Clause, or an expression such as 'MIT OR Apache-2.0'",
            )
            info = None
        if info is not None and info.errors:
            report.add(
                ("metadata", "license"),
                f"'{license_text}' is not a valid SPDX expression: {'; '.join(info.errors)}",
            )
    policy = _dict(_dict(data.get("security")).get("licenses"))
    lists = {key: _list(policy.get(key)) for key in ("allow", "deny")}
    known = _spdx().known_symbols
    for key, ids in lists.items():
        for index, license_id in enumerate(ids):
            if isinstance(license_id, str) and license_id not in known and not _named_elsewhere(license_id):
                report.add(
                    ("security", "licenses", key, index),
                    f"'{license_id}' is not an SPDX license identifier" + _suggest_license(license_id, known),
                )
    both = set(map(str, lists["allow"])) & set(map(str, lists["deny"]))
    for license_id in sorted(both):
        index = lists["deny"].index(license_id)
        report.add(
            ("security", "licenses", "deny", index),
            f"'{license_id}' is both allowed and denied; keep it in one list",
        )


def _check_signing(data: dict[str, Any], base: FsPath, report: Reporter) -> None:
    allow_links = _allow_links(_dict(data.get("model")))
    key = _dict(_dict(data.get("security")).get("signing")).get("public_key")
    if isinstance(key, str) and key:
        _check_named_file(("security", "signing", "public_key"), key, base, report, allow_links=allow_links)
    signature = _dict(_dict(data.get("model")).get("signature"))
    for name in ("file", "public_key"):
        value = signature.get(name)
        if isinstance(value, str) and value:
            _check_named_file(("model", "signature", name), value, base, report, allow_links=allow_links)


def check(data: Any, base: FsPath, report: Reporter) -> None:
    """Report every semantic problem in `data`, whose files live under `base`."""
    if not isinstance(data, dict):
        return
    _check_model(data, base, report)
    _check_python(data, base, report)
    _check_targets(data, report)
    _check_licenses(data, report)
    _check_signing(data, base, report)
