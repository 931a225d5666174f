"""Deployment descriptions of a verified image: a KServe InferenceService and Modzy's metadata.

Everything comes from the image itself (its serving config, its config's user, the index's
annotations), so an image pulled from a registry deploys the same as one built here. The
caller verifies first; these functions only describe.

KServe facts this follows (kserve#2376, #2728, #2961; knative/serving#8471): a custom gRPC
predictor exposes one container port; Knative mode needs it named `h2c`, RawDeployment a
`<protocol>[-suffix]` name such as `grpc-omi`; `protocolVersion` belongs to `predictor.model`,
not to custom containers, so it is not set. The CRD's schema accepts two ports or a tag
instead of a digest: `check_kserve` adds those rules.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from omi_build.errors import DeployError
from omi_build.image.layout import Layout
from omi_build.policy import pod_security_for

CONFIG_PATH = "opt/omi/omi.json"
_DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_PINNED = re.compile(r".+@sha256:[0-9a-f]{64}")
_RAW_PORT_NAME = re.compile(r"grpc(-[a-z0-9-]+)?")
MODES = ("knative", "raw")


@dataclass(frozen=True, kw_only=True, slots=True)
class Image:
    """What deploy reads from a verified layout."""

    reference: str  # registry/repository@sha256:<index digest>
    config: dict[str, Any]  # the serving config
    uid: int
    annotations: dict[str, str]

    @property
    def port(self) -> int:
        return int(self.config["serving"]["port"])

    @property
    def accelerator(self) -> str:
        return str((self.config.get("device") or {}).get("accelerator") or "cpu")


def read_image(layout: Layout, repository: str, arch: str) -> Image:
    """The deployable facts of the layout's image, to be pulled as `repository`@digest."""
    index = layout.target_index()
    image = layout.image(arch)
    raw = layout.file(image, CONFIG_PATH)
    if raw is None:
        msg = f"the image has no {CONFIG_PATH}: it was not built by omi-build"
        raise DeployError(msg)
    config_blob = layout.json_blob(image.manifest["config"]["digest"])
    user = str(config_blob.get("config", {}).get("User") or "0").split(":", 1)[0]
    if not user.isdigit() or int(user) == 0:
        msg = f"the image runs as user '{user}': KServe runs containers as non-root"
        raise DeployError(msg, hint="set security.user to a non-zero uid and build again")
    annotations = dict(layout.json_blob(index.digest).get("annotations") or {})
    return Image(
        reference=f"{repository}@{index.digest}",
        config=json.loads(raw),
        uid=int(user),
        annotations=annotations,
    )


def _name(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:45].rstrip("-") or "model"


def _probe(port: int, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "grpc": {"port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def kserve(
    image: Image, *, mode: str = "knative", name: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    """The InferenceService of a custom gRPC predictor serving `image`."""
    if mode not in MODES:
        msg = f"unknown KServe mode '{mode}'"
        raise DeployError(msg, hint="knative (the default) or raw (RawDeployment)")
    model = image.config["model"]
    port = image.port
    security = pod_security_for(image.uid, image.accelerator)
    startup_s = float(image.config["serving"]["timeouts"]["startup_s"])
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": image.reference,
        "ports": [
            {"name": "h2c" if mode == "knative" else "grpc-omi", "containerPort": port, "protocol": "TCP"}
        ],
        "env": [{"name": "PSC_MODEL_PORT", "value": str(port)}],
        "securityContext": security["container"],
        "volumeMounts": security["volumeMounts"],
        # gRPC health (grpc.health.v1): SERVING once the model has loaded, NOT_SERVING while draining.
        "startupProbe": _probe(port, period=2, failures=max(1, int(startup_s // 2))),
        "readinessProbe": _probe(port, period=5, failures=2),
        "livenessProbe": _probe(port, period=10, failures=3),
    }
    if security["resources"]:
        container["resources"] = security["resources"]
    annotations = {
        key: value for key, value in sorted(image.annotations.items()) if key.startswith("ml.openmodel.")
    }
    annotations["omi-build.dev/image"] = image.reference
    if mode == "raw":
        annotations["serving.kserve.io/deploymentMode"] = "RawDeployment"
    metadata: dict[str, Any] = {
        "name": name or _name(str(model["name"])),
        "labels": {
            "app.kubernetes.io/name": _name(str(model["name"])),
            "app.kubernetes.io/version": re.sub(r"[^A-Za-z0-9_.-]", "-", str(model["version"]))[:63],
            "app.kubernetes.io/managed-by": "omi-build",
        },
        "annotations": annotations,
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": {
            "predictor": {
                "securityContext": security["pod"],
                "volumes": security["volumes"],
                "containers": [container],
            }
        },
    }


def check_kserve(document: dict[str, Any], *, mode: str) -> list[str]:
    """The rules an InferenceService must keep that the CRD's schema does not check; the broken ones."""
    problems = []
    name = str(document.get("metadata", {}).get("name", ""))
    if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
        problems.append(f"metadata.name '{name}' is not a DNS-1035 label (a-z, 0-9, '-', at most 63)")
    predictor = document.get("spec", {}).get("predictor", {})
    containers = predictor.get("containers") or []
    if len(containers) != 1:
        problems.append(
            f"spec.predictor.containers has {len(containers)} containers; a custom predictor has one"
        )
        return problems
    container = containers[0]
    image = str(container.get("image", ""))
    if not _PINNED.fullmatch(image):
        problems.append(f"the image '{image}' is not pinned by digest (…@sha256:<64 hex>)")
    problems += _port_problems(container, mode)
    context = container.get("securityContext") or {}
    if context.get("runAsNonRoot") is not True or context.get("runAsUser") in (None, 0):
        problems.append("the container does not run as a non-root user")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("the container allows privilege escalation")
    return problems


def _port_problems(container: dict[str, Any], mode: str) -> list[str]:
    problems = []
    ports = container.get("ports") or []
    if len(ports) != 1:
        problems.append(f"the container exposes {len(ports)} ports; KServe exposes exactly one")
    else:
        port_name = str(ports[0].get("name", ""))
        if mode == "knative" and port_name != "h2c":
            problems.append(f"the port is named '{port_name}'; Knative serves gRPC only on a port named h2c")
        if mode == "raw" and not _RAW_PORT_NAME.fullmatch(port_name):
            problems.append(f"the port is named '{port_name}'; RawDeployment wants grpc or grpc-<suffix>")
        number = ports[0].get("containerPort")
        env = {e.get("name"): e.get("value") for e in container.get("env") or []}
        if env.get("PSC_MODEL_PORT") != str(number):
            problems.append(
                f"PSC_MODEL_PORT is {env.get('PSC_MODEL_PORT')!r}, not the container port {number}"
            )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if (container.get(probe) or {}).get("grpc", {}).get("port") != number:
                problems.append(f"{probe} does not check gRPC health on port {number}")
    return problems


def validate_crd(document: dict[str, Any], crd: Path) -> list[str]:
    """The InferenceService checked against a CRD's OpenAPI v3 schema (kserve's
    serving.kserve.io_inferenceservices.yaml); the problems, each with its path."""
    import jsonschema  # noqa: PLC0415

    try:
        versions = _crd_versions(crd.resolve(), crd.stat().st_mtime_ns)
        schema = versions[document["apiVersion"].split("/", 1)[1]]["schema"]["openAPIV3Schema"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError) as exc:
        msg = f"{crd} is not the InferenceService CRD ({exc})"
        raise DeployError(
            msg, hint="kubectl get crd inferenceservices.serving.kserve.io -o yaml > crd.yaml"
        ) from exc
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    ]


@functools.lru_cache(maxsize=4)
def _crd_versions(path: Path, _mtime_ns: int) -> dict[str, Any]:
    """The CRD's versions by name, parsed once per file (2 MB of YAML: 1 s with libyaml)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    return {v["name"]: v for v in loaded["spec"]["versions"]}


def _megabytes(value: int | None) -> str | None:
    return None if value is None else f"{max(1, value >> 20)}M"


def modzy(image: Image, *, source: str) -> dict[str, Any]:
    """The metadata Modzy shows for a model container (its model.yaml, specification 0.4):
    name, version, description, inputs and outputs, resources and timeouts; `source` is the
    registry reference or docker-archive tar Modzy imports."""
    model = image.config["model"]
    serving = image.config["serving"]
    timeouts = serving["timeouts"]

    def tensors(declared: list[dict[str, Any]], *, inputs: bool) -> dict[str, Any]:
        described = {}
        for tensor in declared:
            entry: dict[str, Any] = {
                "description": tensor.get("description") or f"{tensor['datatype']} tensor {tensor['shape']}",
                "maxSize": _megabytes(tensor.get("max_bytes"))
                or _megabytes(int(serving["max_message_bytes"])),
            }
            media = list(tensor.get("media_types") or ["application/json"])
            entry["acceptedMediaTypes" if inputs else "mediaType"] = media if inputs else media[0]
            described[str(tensor["name"])] = entry
        return described

    return {
        "specification": "0.4",
        "type": "grpc",
        "source": source,
        "image": image.reference,
        "name": model["name"],
        "version": model["version"],
        "author": ", ".join(model.get("authors") or []) or None,
        "description": {
            "summary": model.get("description") or model["name"],
            "technical": model.get("license"),
        },
        "tags": [],
        "inputs": tensors(model["inputs"], inputs=True),
        "outputs": tensors(model["outputs"], inputs=False),
        "resources": {
            "required": {
                "ram": "512Mi",
                "cpu": {"count": 1},
                "gpu": {"count": 1 if image.accelerator == "cuda" else 0},
            }
        },
        "timeout": {"status": f"{int(timeouts['startup_s'])}s", "run": f"{int(timeouts['request_s'])}s"},
        "port": image.port,
        "environment": {"PSC_MODEL_PORT": str(image.port)},
    }


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=120)
