"""Serving side by side: the omi-build image, KServe's ModelServer, MLServer and the floor.

Every server serves the iris example's own model.py on 127.0.0.1 and gets the same
pre-encoded OIP v2 ModelInfer (raw_input_contents) from h2load (Debian's nghttp2-client, a C
load generator, so the client is not what is measured). Cells: batch 1 and 32 rows, at
c = 1, 8 and 32 streams over one connection (as one gRPC client sends them), and 32 streams
over 8 connections (as a proxy or several clients do: only there can several processes
share the work). The servers take turns cell by cell, ROUNDS times; medians are printed.

- omi-build image: the image under runc, as built (serving.concurrency.processes "auto":
  the CPUs the container may use), and again with OMI_PROCESSES=1.
- the floor: a bare grpc.aio handler answering a fixed response (bench/peers/floor.py), in
  the same image with the same Python, grpcio and protobuf.
- KServe 0.16 ModelServer and MLServer 1.7 (in-process, and its default of a separate
  inference process), each in its own venv from requirements/bench-*.lock (make bench).

Server CPU per request is the user+system time of the server's whole process tree over a
cell, divided by the requests answered. Also printed: start to SERVING, RSS (per process), and
16 MB FP32 requests through omi-build (MB/s in and out, and the decode's copies).

    OMI_BENCH_SECONDS=4 OMI_BENCH_ROUNDS=2 .venv/bin/python bench/serve.py
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from omi_build import api, engine
from omi_build import manifest as manifests
from omi_build.runtime._wire import parse_request
from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "iris-sklearn"
PEERS = Path(__file__).resolve().parent / "peers"
SECONDS = int(os.environ.get("OMI_BENCH_SECONDS", "4"))
ROUNDS = int(os.environ.get("OMI_BENCH_ROUNDS", "2"))
WARM_UP_S = 1
# (rows per request, connections, streams per connection)
CELLS = [(1, 1, 1), (1, 1, 8), (1, 1, 32), (1, 8, 4), (32, 1, 1), (32, 1, 8), (32, 1, 32), (32, 8, 4)]
MODEL = "iris-classifier"


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _request(rows: int) -> oip.ModelInferRequest:
    batch = np.random.default_rng(rows).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(rows, 4)).astype("<f4")
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="measurements", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(batch.tobytes())
    return request


def _grpc_body(payload: bytes) -> bytes:
    return b"\0" + len(payload).to_bytes(4, "big") + payload


# -- processes ------------------------------------------------------------------------------
def _tree(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _cpu_s(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _steal() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine: a busy hypervisor takes CPU from every
    server alike, and these figures move with it."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[7], sum(fields[:8])


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Server:
    name: str
    port: int
    stop: Callable[[], None]
    root: Callable[[], int]  # the pid whose process tree is the server
    started_s: float = 0.0
    pids: list[int] = field(default_factory=list)
    note: str = ""

    def rss(self) -> list[float]:
        return [r for r in (_rss_mib(pid) for pid in self.pids) if r > 0]


def _ready(port: int, timeout: float = 120) -> None:
    """Until OIP ServerReady and ModelReady say so."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        while time.monotonic() < deadline:
            try:
                if stub.ServerReady(oip.ServerReadyRequest(), timeout=1).ready and (
                    stub.ModelReady(oip.ModelReadyRequest(name=MODEL), timeout=1).ready
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.02)
    msg = f"nothing ready on port {port} within {timeout:.0f} s"
    raise RuntimeError(msg)


def _when_ready(server: Server, started: float) -> Server:
    """The server once it answers ready, with the time that took; stopped if it never does."""
    try:
        _ready(server.port)
    except BaseException:
        server.stop()
        raise
    server.started_s = time.perf_counter() - started
    return server


def _image_server(name: str, layout: Path, log: Path, **options: Any) -> Server:
    port = _port()
    output = log.open("wb")
    running = engine.start(layout, port=port, output=output, **options)
    started = time.perf_counter()  # from runc run: the image unpacked, as a runtime keeps it

    def pid() -> int:
        state = subprocess.run(["runc", "state", running.name], check=True, capture_output=True, text=True)
        found: int = json.loads(state.stdout)["pid"]
        return found

    def stop() -> None:
        running.stop()
        output.close()

    return _when_ready(Server(name, port, stop, pid), started)


def _process_server(name: str, command: list[str], log: Path, env: dict[str, str], cwd: Path) -> Server:
    port = int(env["BENCH_GRPC_PORT"])
    output = log.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=output, stderr=output, env={**os.environ, **env}, cwd=cwd)

    def stop() -> None:
        for pid in reversed(_tree(process.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        output.close()

    return _when_ready(Server(name, port, stop, lambda: process.pid), started)


def _kserve(scratch: Path) -> Server:
    python = REPO / ".venv-bench-kserve" / "bin" / "python"
    grpc_port, http_port = _port(), _port()
    command = [str(python), str(PEERS / "kserve_iris.py"), str(EXAMPLE),
               "--grpc_port", str(grpc_port), "--http_port", str(http_port), "--workers", "1"]  # fmt: skip
    env = {"BENCH_GRPC_PORT": str(grpc_port)}
    return _process_server("KServe 0.16 ModelServer", command, scratch / "kserve.log", env, scratch)


def _mlserver(scratch: Path, *, in_process: bool) -> Server:
    folder = scratch / ("mlserver-in-process" if in_process else "mlserver-default")
    folder.mkdir()
    shutil.copy(PEERS / "mlserver_iris.py", folder / "mlserver_iris.py")
    grpc_port, http_port, metrics_port = _port(), _port(), _port()
    settings: dict[str, Any] = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port}
    if in_process:
        settings["parallel_workers"] = 0
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {"name": MODEL, "implementation": "mlserver_iris.IrisRuntime"}
    (folder / "model-settings.json").write_text(json.dumps(model))
    command = [str(REPO / ".venv-bench-mlserver" / "bin" / "mlserver"), "start", str(folder)]
    env = {"BENCH_GRPC_PORT": str(grpc_port), "IRIS_MODEL_DIR": str(EXAMPLE), "PYTHONPATH": str(folder)}
    name = "MLServer 1.7 in-process" if in_process else "MLServer 1.7 default"
    return _process_server(name, command, folder / "mlserver.log", env, folder)


# -- load -----------------------------------------------------------------------------------
@dataclass
class Cell:
    rate: float
    p50: float
    p99: float
    cpu_ms: float
    errors: int


def _h2load(server: Server, body: Path, connections: int, streams: int, log: Path) -> Cell:
    command = [
        "h2load", "-c", str(connections), "-m", str(streams), "-D", str(SECONDS),
        "--warm-up-time", str(WARM_UP_S), "-d", str(body),
        "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log),
        f"http://127.0.0.1:{server.port}/inference.GRPCInferenceService/ModelInfer",
    ]  # fmt: skip
    pids = _tree(server.root())
    before = _cpu_s(pids)
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    cpu = _cpu_s(pids) - before
    rate = next(float(line.split()[3]) for line in out.splitlines() if line.startswith("finished in"))
    rows = [row.split("\t") for row in log.read_text().splitlines() if row.strip()]
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    log.unlink()
    count = max(len(latencies), 1)
    return Cell(
        rate=rate,
        p50=latencies[int(0.5 * (count - 1))] if latencies else float("nan"),
        p99=latencies[int(0.99 * (count - 1))] if latencies else float("nan"),
        cpu_ms=cpu * 1000 / count,
        errors=sum(row[1] != "200" for row in rows),
    )


def _check_answers(server: Server) -> None:
    """The bodies h2load sends must really succeed, with the model's answer."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        for rows in (1, 32):
            try:
                answer = stub.ModelInfer(_request(rows), timeout=10)
            except grpc.RpcError as exc:
                msg = f"{server.name} failed the request of {rows} rows: {exc}"
                raise RuntimeError(msg) from None
            names = [o.name for o in answer.outputs]
            assert names == ["species", "probabilities"], (server.name, names)
            assert answer.outputs[0].shape[0] == rows, (server.name, answer.outputs[0].shape)


def _median(cells: list[Cell]) -> Cell:
    return Cell(
        rate=statistics.median(c.rate for c in cells),
        p50=statistics.median(c.p50 for c in cells),
        p99=statistics.median(c.p99 for c in cells),
        cpu_ms=statistics.median(c.cpu_ms for c in cells),
        errors=sum(c.errors for c in cells),
    )


# -- large tensors --------------------------------------------------------------------------
def _large(server: Server) -> None:
    rows = 1 << 20  # 16 MiB of FP32 rows in, 20 MiB out (INT64 species, FP32 probabilities)
    request = _request(rows)
    payload = request.SerializeToString()
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.max_receive_message_length", 1 << 26), ("grpc.max_send_message_length", 1 << 26)],
    ) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
            _registered_method=True,
        )
        answer = call(payload, timeout=60)
        pids = _tree(server.root())
        times = []
        cpu_before = _cpu_s(pids)
        for _ in range(10):
            started = time.perf_counter()
            answer = call(payload, timeout=60)
            times.append(time.perf_counter() - started)
        cpu = (_cpu_s(pids) - cpu_before) / 10
    best = min(times)
    print(
        f"\n16 MiB FP32 requests ({rows:,} rows) through {server.name}: best {best * 1000:.1f} ms, "
        f"median {statistics.median(times) * 1000:.1f} ms per request (client included); server CPU "
        f"{cpu * 1000:.1f} ms per request; {len(payload) / best / 1e6:.0f} MB/s in, "
        f"{len(answer) / best / 1e6:.0f} MB/s out"
    )
    # The decode in this process: views over the received bytes, against protobuf's copies.
    started = time.perf_counter()
    for _ in range(10):
        parsed = parse_request(payload)
        view = np.frombuffer(parsed.raw[0], dtype="<f4")
    ours = (time.perf_counter() - started) / 10
    shares = np.shares_memory(view, np.frombuffer(payload, dtype=np.uint8))
    started = time.perf_counter()
    for _ in range(10):
        message = oip.ModelInferRequest.FromString(payload)
        np.frombuffer(message.raw_input_contents[0], dtype="<f4")
    theirs = (time.perf_counter() - started) / 10
    print(
        f"decode of one such request: {ours * 1000:.2f} ms, the tensor a view of the received bytes: "
        f"{shares} (protobuf's parse and read: {theirs * 1000:.2f} ms, two copies)"
    )


# -- the run --------------------------------------------------------------------------------
def main() -> None:  # noqa: C901, PLR0912, PLR0915 - one report, top to bottom
    if shutil.which("h2load") is None:
        sys.exit("h2load is missing: apt-get install nghttp2-client (make deps does)")
    for venv in (".venv-bench-kserve", ".venv-bench-mlserver"):
        if not (REPO / venv).is_dir():
            sys.exit(f"{venv} is missing: make bench installs it (from requirements/bench-*.lock)")
    layout = api.build([str(EXAMPLE)])[0].layout
    python = f"/usr/bin/python{manifests.load(EXAMPLE).python.version}"
    floor_source = (PEERS / "floor.py").read_text()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="omi-bench-") as scratch_name:
        scratch = Path(scratch_name)
        try:
            omi = _image_server("omi-build image", layout, scratch / "omi.log")
            servers.append(omi)
            servers.append(
                _image_server(
                    "omi-build, 1 process", layout, scratch / "omi1.log", env={"OMI_PROCESSES": "1"}
                )
            )
            servers.append(
                _image_server(
                    "floor (bare handler)", layout, scratch / "floor.log", args=[python, "-c", floor_source]
                )
            )
            servers.append(_kserve(scratch))
            servers.append(_mlserver(scratch, in_process=True))
            servers.append(_mlserver(scratch, in_process=False))
            for server in servers:
                server.pids = _tree(server.root())
                if not server.name.startswith("floor"):
                    _check_answers(server)
            serving = [
                json.loads(line)
                for line in (scratch / "omi.log").read_text().splitlines()
                if '"serving"' in line
            ]
            processes = serving[0].get("processes", 1) if serving else 1
            omi.note = f"{processes} processes" if processes > 1 else "1 process"

            print(
                f"{SECONDS:g} s per cell after {WARM_UP_S} s of warm-up, {ROUNDS} rounds, "
                "servers taking turns; medians\n"
            )
            print(f"{'server':<26} {'start to SERVING':>17} {'RSS MiB (per process)':>30}")
            for server in servers:
                rss = server.rss()
                shown = (
                    f"{sum(rss):.0f} ({' + '.join(f'{r:.0f}' for r in rss)})"
                    if len(rss) > 1
                    else f"{sum(rss):.0f}"
                )
                print(f"{server.name:<26} {server.started_s * 1000:>14.0f} ms {shown:>30}")
            for event in serving:
                print(
                    f"  omi-build image: {event.get('processes', 1)} processes, "
                    f"startup {event['startup_ms']} ms "
                    f"inside the container; RSS per process {event.get('rss_mib')}, supervisor "
                    f"{event.get('supervisor_rss_mib')} MiB"
                )

            results: dict[tuple[int, int, int], dict[str, list[Cell]]] = {}
            bodies = {}
            for rows in {cell[0] for cell in CELLS}:
                bodies[rows] = scratch / f"body-{rows}.bin"
                bodies[rows].write_bytes(_grpc_body(_request(rows).SerializeToString()))
            steal_before = _steal()
            for _ in range(ROUNDS):
                for cell in CELLS:
                    rows, connections, streams = cell
                    for server in servers:
                        measured = _h2load(server, bodies[rows], connections, streams, scratch / "h2load.log")
                        results.setdefault(cell, {}).setdefault(server.name, []).append(measured)
            steal, total = (after - before for after, before in zip(_steal(), steal_before, strict=True))
            taken = 100 * steal / max(total, 1)
            print(f"\nCPU time the hypervisor took from this machine during the cells: {taken:.0f}%")
            for cell in CELLS:
                rows, connections, streams = cell
                print(
                    f"\nbatch {rows}, c={connections * streams} "
                    f"({streams} stream(s) on {connections} connection(s))"
                )
                print(
                    f"  {'server':<26} {'req/s':>8} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                    f"{'cpu ms/req':>11} {'errors':>7}"
                )
                for server in servers:
                    m = _median(results[cell][server.name])
                    print(
                        f"  {server.name:<26} {m.rate:>8.0f} {m.rate * rows:>9.0f} {m.p50:>8.2f} "
                        f"{m.p99:>8.2f} {m.cpu_ms:>11.3f} {m.errors:>7}"
                    )

            def get(name: str, cell: tuple[int, int, int]) -> Cell:
                return _median(results[cell][name])

            one8, one32, multi = (1, 1, 8), (1, 1, 32), (1, 8, 4)
            ours, floor, kserve = (
                get(omi.name, one8),
                get("floor (bare handler)", one8),
                get("KServe 0.16 ModelServer", one8),
            )
            print("\nagainst the targets (batch 1):")
            print(f"  c=8 req/s: {ours.rate / kserve.rate:.2f}x KServe's (target >= 2.5x), "
                  f"{ours.rate / floor.rate:.2f}x the floor's (target >= 0.75x)")  # fmt: skip
            print(f"  c=8 p99: {ours.p99 / kserve.p99:.2f} of KServe's (target <= 0.33)")
            print(
                f"  c=8 server CPU per request: {ours.cpu_ms / floor.cpu_ms:.2f}x the floor's "
                "(target <= 1.2x)"
            )
            print(f"  c=32 req/s / c=8 req/s: {get(omi.name, one32).rate / ours.rate:.2f} (target >= 1)")
            print(
                f"  32 streams on 8 connections: {get(omi.name, multi).rate:.0f} req/s "
                f"({omi.note}) against {get('omi-build, 1 process', multi).rate:.0f} with 1 process and "
                f"{get('floor (bare handler)', multi).rate:.0f} for the floor"
            )
            _large(omi)
        finally:
            for server in servers:
                server.stop()


if __name__ == "__main__":
    main()
