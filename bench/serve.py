"""The iris image's server under load on 127.0.0.1 (issue: generated gRPC model server).

The image runs in the best local runtime (runc here). h2load (Debian's nghttp2-client), a C
load generator, sends a pre-encoded OIP v2 ModelInfer request, so the client is not the
bottleneck that a Python client would be near 2.5k requests/s. Reported per run: requests/s,
p50/p90/p99 latency, errors (non-200 answers, and gRPC status checked separately), and server
CPU per request; once: time from process start to SERVING and resident memory.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from omi_build import api, engine
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc

REPO = Path(__file__).resolve().parent.parent
DURATION_S = 5
CONCURRENCY = (1, 8, 32)
BATCHES = (1, 32)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _request(rows: int) -> oip.ModelInferRequest:
    batch = np.random.default_rng(rows).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(rows, 4)).astype("<f4")
    request = oip.ModelInferRequest(model_name="iris-classifier")
    request.inputs.add(name="measurements", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(batch.tobytes())
    return request


def _grpc_body(request: oip.ModelInferRequest) -> bytes:
    payload = request.SerializeToString()
    return b"\0" + len(payload).to_bytes(4, "big") + payload


def _pid(name: str) -> int:
    state = subprocess.run(["runc", "state", name], check=True, capture_output=True, text=True)
    pid: int = json.loads(state.stdout)["pid"]
    return pid


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _h2load(port: int, body: Path, concurrency: int, log: Path) -> tuple[float, int, list[float]]:
    command = [
        "h2load", "-c", str(concurrency), "-m", "1", "-D", str(DURATION_S), "--warm-up-time", "1",
        "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
        "--log-file", str(log), f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
    ]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rate = next(float(line.split()[3]) for line in out.splitlines() if line.startswith("finished in"))
    lines = [row.split("\t") for row in log.read_text().splitlines() if row.strip()]
    latencies = sorted(int(row[2]) / 1000 for row in lines)
    errors = sum(row[1] != "200" for row in lines)
    return rate, errors, latencies


def main() -> None:
    if shutil.which("h2load") is None:
        sys.exit("h2load is missing: apt-get install nghttp2-client (make deps does)")
    layout = api.build([str(REPO / "examples" / "iris-sklearn")])[0].layout
    port = _port()
    with tempfile.TemporaryDirectory(prefix="omi-bench-") as scratch:
        root = Path(scratch)
        server_log = (root / "server.log").open("wb")
        started = time.perf_counter()
        running = engine.start(layout, port=port, output=server_log)
        try:
            engine.wait_serving(running)
            to_serving = time.perf_counter() - started
            serving = next(
                json.loads(line)
                for line in (root / "server.log").read_text().splitlines()
                if '"serving"' in line
            )
            pid = _pid(running.name)
            idle_rss = _rss_mib(pid)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
                for rows in BATCHES:  # the bodies h2load sends must really succeed
                    assert stub.ModelInfer(_request(rows)).outputs
            print(
                f"start to SERVING: {serving['startup_ms']} ms in the container (process start), "
                f"{to_serving * 1000:.0f} ms including runc start-up; idle RSS {idle_rss:.1f} MiB"
            )
            print(f"\n{'batch':>5} {'conc':>5} {'req/s':>9} {'rows/s':>9} {'p50 ms':>8} {'p90 ms':>8} "
                  f"{'p99 ms':>8} {'errors':>7} {'cpu ms/req':>11}")  # fmt: skip
            for rows in BATCHES:
                body = root / f"body-{rows}.bin"
                body.write_bytes(_grpc_body(_request(rows)))
                for concurrency in CONCURRENCY:
                    log = root / f"h2load-{rows}-{concurrency}.log"
                    cpu_before = _cpu_seconds(pid)
                    rate, errors, latencies = _h2load(port, body, concurrency, log)
                    cpu = _cpu_seconds(pid) - cpu_before
                    count = len(latencies)
                    p50, p90, p99 = (latencies[int(q * (count - 1))] for q in (0.5, 0.9, 0.99))
                    cpu_ms = cpu * 1000 / max(count, 1)
                    print(
                        f"{rows:>5} {concurrency:>5} {rate:>9.0f} {rate * rows:>9.0f} "
                        f"{p50:>8.2f} {p90:>8.2f} {p99:>8.2f} {errors:>7} {cpu_ms:>11.3f}"
                    )
            print(f"\npeak RSS {_rss_mib(pid, 'VmHWM'):.1f} MiB")
        finally:
            running.stop()
            server_log.close()


if __name__ == "__main__":
    main()
