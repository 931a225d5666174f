"""The runtime server started for real, outside any container, on a probe model.

Only the runtime's own dependencies (grpcio, protobuf, numpy): `make test-runtime` runs these
tests in a venv without the builder. The server is `python -m omi_build.runtime serve` in a
child process on 127.0.0.1; its config is written here by hand, as omi-build's codegen would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc
from omi_build.runtime.protocol import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
MODEL = "probe"

# x < 0: sleep -x seconds; x == 777: answer NaN and infinities; predict_stream yields x items.
# `wide` makes the answer 257 times the request's size.
PROBE = """
import time
import numpy as np


class Probe:
    def predict(self, inputs):
        x = inputs["x"]
        first = float(x.flat[0])
        if first < 0:
            time.sleep(-first)
        y = x.astype(np.float32)
        if first == 777:
            y = np.full_like(y, np.nan)
            y.flat[-1] = np.inf
        return {"y": y, "wide": np.zeros((len(x), 256), dtype=np.float32)}

    def predict_stream(self, inputs):
        for index in range(int(inputs["x"].flat[0])):
            yield {"y": np.full((1, 1), index, dtype=np.float32), "wide": np.zeros((1, 256), np.float32)}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def write_package(directory: Path, source: str = PROBE, **serving: Any) -> Path:
    """The probe model (or `source`) and its serving config; `serving` overrides parts of the
    defaults."""
    model = directory / "model"
    model.mkdir(parents=True)
    (model / "model.py").write_text(source)
    digest = "sha256:" + hashlib.sha256(source.encode()).hexdigest()
    tensor = {"datatype": "FP32", "shape": [-1, 1], "media_types": [], "max_bytes": None, "description": ""}
    settings: dict[str, Any] = {
        "batching": {"max_batch_size": 8, "max_wait_ms": 1},
        "concurrency": {"max_in_flight": 8, "workers": 1},
        "max_message_bytes": 4 << 20,
        "port": 45000,
        "protocols": ["omi-v1", "oip-v2"],
        "timeouts": {"drain_s": 5.0, "request_s": 10.0, "startup_s": 60.0, "stream_idle_s": 30.0},
    }
    for key, value in serving.items():
        if isinstance(value, dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    config = {
        "apiVersion": "omi-runtime/v1",
        "model": {
            "authors": [],
            "class": "Probe",
            "description": "a probe for the robustness tests",
            "directory": str(model),
            "files": {"model.py": digest},
            "inputs": [{**tensor, "name": "x"}],
            "outputs": [{**tensor, "name": "y"}, {**tensor, "name": "wide", "shape": [-1, 256]}],
            "license": "Apache-2.0",
            "module": "model.py",
            "name": MODEL,
            "version": "1",
        },
        "serving": settings,
    }
    path = directory / "omi.json"
    path.write_text(json.dumps(config))
    return path


def wait_serving(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                msg = f"the server exited with {server.process.returncode}: {server.log.read_text()}"
                raise AssertionError(msg)
            with contextlib.suppress(grpc.RpcError):
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.05)
    msg = "the server did not report SERVING"
    raise AssertionError(msg)


def start(directory: Path, config: Path, port: int, env: dict[str, str] | None = None) -> Server:
    log = directory / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "omi_build.runtime", "serve", str(config), "--port", str(port),
             "--host", "127.0.0.1"],
            cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    return Server(process=process, port=port, log=log)


@contextlib.contextmanager
def serving(
    directory: Path, *, env: dict[str, str] | None = None, source: str = PROBE, **settings: Any
) -> Iterator[Server]:
    """The server on a free port, SERVING; killed at the end (with its children, if any)."""
    config = write_package(directory, source, **settings)
    server = start(directory, config, free_port(), env)
    process = server.process
    try:
        wait_serving(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


def infer_request(values: list[float], name: str = MODEL) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=name)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[len(values), 1])
    tensor.contents.fp32_contents.extend(values)
    return request


def inference(channel: grpc.Channel) -> oip_grpc.GRPCInferenceServiceStub:
    return oip_grpc.GRPCInferenceServiceStub(channel)


def health_ms(address: str) -> float:
    """Milliseconds a Health/Check from a new connection takes to answer SERVING."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=5)
        started = time.perf_counter()
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        took = (time.perf_counter() - started) * 1000
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    return took
