"""`omi-build test`: every model.examples entry, through both protocols, against a running image.

Outputs are compared exactly for integers, booleans and text, and within the example's
tolerance for floating point numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    example: str
    protocol: str
    passed: bool
    detail: str


def _array(value: Any, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        array = np.asarray(value, dtype=object)
        flat = [v.encode() if isinstance(v, str) else v for v in array.reshape(-1)]
        result = np.empty(len(flat), dtype=object)
        result[:] = flat
        return result.reshape(array.shape)
    return np.asarray(value, dtype=_NUMPY[datatype])


def compare(expected: Any, actual: np.ndarray, datatype: str, tolerance: float) -> str | None:
    """None when they match, else what differs."""
    want = _array(expected, datatype)
    if want.shape != actual.shape:
        return f"shape {list(actual.shape)}, expected {list(want.shape)}"
    if datatype.startswith("FP"):
        worst = float(np.max(np.abs(actual.astype(np.float64) - want.astype(np.float64)), initial=0.0))
        return None if worst <= tolerance else f"differs by {worst:.3g} (tolerance {tolerance:g})"
    if datatype == "BYTES":
        same = [bytes(a) == bytes(b) for a, b in zip(actual.reshape(-1), want.reshape(-1), strict=True)]
        return None if all(same) else f"{actual.tolist()} != {want.tolist()}"
    return None if np.array_equal(actual, want) else f"{actual.tolist()} != {want.tolist()}"


def _check(example: dict[str, Any], outputs: dict[str, np.ndarray], types: dict[str, str]) -> str | None:
    problems = []
    for name, expected in example.get("outputs", {}).items():
        if name not in outputs:
            problems.append(f"{name}: missing")
            continue
        difference = compare(expected, outputs[name], types[name], float(example.get("tolerance", 1e-6)))
        if difference:
            problems.append(f"{name}: {difference}")
    return "; ".join(problems) or None


def via_oip(
    channel: Any, config: dict[str, Any], example: dict[str, Any], *, raw: bool
) -> dict[str, np.ndarray]:
    from omi_build.runtime.protocol import grpc_predict_v2_pb2 as pb  # noqa: PLC0415
    from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: PLC0415
    from omi_build.runtime.tensors import CONTENTS_FIELD, DTYPES, to_raw  # noqa: PLC0415

    model = config["model"]
    request = pb.ModelInferRequest(model_name=model["name"])
    for spec in model["inputs"]:
        array = _array(example["inputs"][spec["name"]], spec["datatype"])
        tensor = request.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=list(array.shape))
        if raw:
            request.raw_input_contents.append(to_raw(array, spec["datatype"]))
        else:
            flat = array.reshape(-1)
            values = list(flat) if spec["datatype"] == "BYTES" else flat.tolist()
            getattr(tensor.contents, CONTENTS_FIELD[spec["datatype"]]).extend(values)
    response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    outputs = {}
    for index, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            data = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                from omi_build.runtime.tensors import TensorSpec, from_raw  # noqa: PLC0415

                spec = TensorSpec(tensor.name, "BYTES", tuple(tensor.shape), (), None, "")
                outputs[tensor.name] = from_raw(spec, list(tensor.shape), data)
            else:
                outputs[tensor.name] = np.frombuffer(data, dtype=DTYPES[tensor.datatype]).reshape(
                    tensor.shape
                )
        else:
            values = list(getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype]))
            outputs[tensor.name] = _array(values, tensor.datatype).reshape(tensor.shape)
    return outputs


def via_omi(channel: Any, config: dict[str, Any], example: dict[str, Any]) -> dict[str, np.ndarray]:
    from omi_build.runtime.protocol import model2_template_pb2 as pb  # noqa: PLC0415
    from omi_build.runtime.protocol import model2_template_pb2_grpc as pb_grpc  # noqa: PLC0415

    model = config["model"]
    first = model["inputs"][0]["name"]
    rows = len(example["inputs"][first])
    request = pb.RunRequest()
    for row in range(rows):
        item = request.inputs.add()
        for spec in model["inputs"]:
            value = example["inputs"][spec["name"]][row]
            item.input[spec["name"]] = (
                value.encode() if isinstance(value, str) else json.dumps(value).encode()
            )
    response = pb_grpc.ModzyModelStub(channel).Run(request, timeout=30)
    if response.status_code != 200 or not all(o.success for o in response.outputs):
        errors = [o.output.get("error", b"").decode() for o in response.outputs if not o.success]
        msg = f"status {response.status_code}: {response.message} {'; '.join(errors)}".strip()
        raise ValueError(msg)
    types = {spec["name"]: spec["datatype"] for spec in model["outputs"]}
    return {
        name: _array([json.loads(o.output[name]) for o in response.outputs], types[name]) for name in types
    }


def run(port: int, config: dict[str, Any]) -> list[Outcome]:
    """Send every example through OIP (contents and raw) and OMI; compare with the expected outputs."""
    import grpc  # noqa: PLC0415

    model = config["model"]
    types = {spec["name"]: spec["datatype"] for spec in model["outputs"]}
    protocols = config["serving"]["protocols"]
    outcomes = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for example in model.get("examples", []):
            senders = []
            if "oip-v2" in protocols:
                senders += [("oip-v2", lambda e: via_oip(channel, config, e, raw=False)),
                            ("oip-v2 raw", lambda e: via_oip(channel, config, e, raw=True))]  # fmt: skip
            if "omi-v1" in protocols:
                senders.append(("omi-v1", lambda e: via_omi(channel, config, e)))
            for protocol, send in senders:
                try:
                    problem = _check(example, send(example), types)
                except (grpc.RpcError, ValueError, KeyError) as exc:
                    detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc)
                    problem = f"request failed: {detail}"
                outcomes.append(
                    Outcome(
                        example=example["name"],
                        protocol=protocol,
                        passed=problem is None,
                        detail=problem or "ok",
                    )
                )
    return outcomes
