"""The model server: one port for OMI v1, OIP v2, health and reflection; drains on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import grpc

from ._batcher import Batcher
from ._device import probe
from ._health import NOT_SERVING, SERVING, HealthService, ReflectionService, add_reflection
from ._limits import Deadlines, Gate, Guarded, short
from ._model import Config, StartupError, load_model, read_config, verify_files

RUNTIME_VERSION = "1"
_LOG_FIELD = 1000  # characters of one log field: a client's 1 MB name costs one short line
OIP_SERVICE = "inference.GRPCInferenceService"
OMI_SERVICE = "ModzyModel"


def _process_age_s() -> float | None:
    """Seconds since this process started, from /proc (None where there is no /proc)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class State:
    """What the services share: the model once loaded, and whether it may serve."""

    log_stream: TextIO = field(default_factory=lambda: sys.stderr)
    ready: bool = False  # what health says: SERVING only between loading and draining
    model: Any = None
    batcher: Any = None
    gate: Gate = field(default_factory=lambda: Gate(256))
    deadlines: Deadlines = field(default_factory=lambda: Deadlines(60.0))
    streams: ThreadPoolExecutor | None = None  # stream generators: never the batcher's workers
    stream_idle_s: float = 60.0

    @property
    def loaded(self) -> bool:
        """Whether model calls can be made: true from loading to exit, draining included, so
        requests already received when SIGTERM came are answered, not refused."""
        return self.batcher is not None

    def log(self, event: str, *, level: str = "info", **fields: Any) -> None:
        bounded = {
            key: short(value, _LOG_FIELD) if isinstance(value, str) else value
            for key, value in fields.items()
        }
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": level,
            "event": event,
            **bounded,
        }
        self.log_stream.write(json.dumps(record, default=str) + "\n")
        self.log_stream.flush()


def _port(config: Config, override: int | None) -> int:
    if override is not None:
        return override
    from_env = os.environ.get("PSC_MODEL_PORT")
    if from_env:
        if not from_env.isdigit() or not 0 < int(from_env) < 65536:
            msg = f"PSC_MODEL_PORT={from_env!r} is not a port number"
            raise StartupError(msg)
        return int(from_env)
    return int(config.serving["port"])


async def serve(
    config_path: Path, *, port: int | None = None, host: str = "[::]", model_dir: Path | None = None
) -> int:
    """Serve until SIGTERM, SIGINT or an OMI Shutdown; return the exit code."""
    from ._oip import InferenceService  # noqa: PLC0415 - loaded after the port is open
    from ._omi import ModzyService  # noqa: PLC0415

    state = State()
    try:
        config = read_config(config_path, model_dir)
        listen = _port(config, port)
    except StartupError as exc:
        state.log("startup_failed", level="error", message=str(exc))
        return 1
    serving = config.serving
    limit = int(serving["max_message_bytes"])
    max_in_flight = int(serving["concurrency"]["max_in_flight"])
    timeouts = serving["timeouts"]
    state.gate = Gate(max_in_flight)
    state.deadlines = Deadlines(float(timeouts["request_s"]))
    state.stream_idle_s = float(timeouts.get("stream_idle_s", 60.0))
    workers = int(serving["concurrency"]["workers"])
    state.streams = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model-stream")
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ],
        # The model's limit is the Gate (RESOURCE_EXHAUSTED, health exempt); grpcio's own,
        # which would cancel health checks too, is only a backstop far above it.
        maximum_concurrent_rpcs=max(4 * max_in_flight, max_in_flight + 1024),
    )
    protocols = serving["protocols"]
    services = [s for s, p in ((OMI_SERVICE, "omi-v1"), (OIP_SERVICE, "oip-v2")) if p in protocols]
    health = HealthService(services)
    stop = asyncio.Event()
    from .protocol import grpc_predict_v2_pb2_grpc, health_pb2_grpc, model2_template_pb2_grpc  # noqa: PLC0415

    guarded = Guarded(server)  # undecodable requests: INVALID_ARGUMENT on every method
    health_pb2_grpc.add_HealthServicer_to_server(health, guarded)
    add_reflection(
        guarded,
        ReflectionService([*services, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]),
    )
    if "oip-v2" in protocols:
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(config, state, RUNTIME_VERSION), guarded
        )
    if "omi-v1" in protocols:
        model2_template_pb2_grpc.add_ModzyModelServicer_to_server(
            ModzyService(config, state, stop.set), guarded
        )
    try:
        server.add_insecure_port(f"{host}:{listen}")
    except RuntimeError as exc:
        state.log("startup_failed", level="error", message=f"cannot listen on port {listen}: {exc}")
        return 1
    await server.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    state.log("listening", port=listen, protocols=protocols, model=config.name, version=config.version)
    verifying = loop.run_in_executor(None, verify_files, config)

    async def load_and_verify() -> Any:
        device = await loop.run_in_executor(None, probe, config.raw.get("device"))
        if device.missing:
            state.log("no_gpu", level="warning", device=device.name, message=device.missing)
        else:
            state.log("device", device=device.name, detail=device.detail or None)
        model = await loop.run_in_executor(None, load_model, config, device.name)
        await verifying
        return model

    try:
        state.model = await asyncio.wait_for(
            load_and_verify(), timeout=float(serving["timeouts"]["startup_s"])
        )
    except (StartupError, TimeoutError) as exc:
        message = str(exc) or f"the model did not load within {serving['timeouts']['startup_s']} s"
        state.log("startup_failed", level="error", message=message)
        await server.stop(grace=None)
        return 1
    batching = serving["batching"]
    state.batcher = Batcher(
        state.model.predict,
        config.outputs,
        max_batch_size=int(batching["max_batch_size"]),
        max_wait_ms=float(batching["max_wait_ms"]),
        workers=int(serving["concurrency"]["workers"]),
    )
    state.batcher.start()
    state.ready = True
    health.set(SERVING)
    age = _process_age_s()
    state.log("serving", startup_ms=round(age * 1000) if age is not None else None)
    await stop.wait()
    state.ready = False
    health.set(NOT_SERVING)
    drain = float(serving["timeouts"]["drain_s"])
    state.log("draining", grace_s=drain, in_flight=state.gate.inflight)
    await asyncio.sleep(0.05)  # let a Shutdown RPC's answer leave before the port closes

    async def end_of_drain() -> None:
        await asyncio.sleep(drain)
        state.deadlines.expire()  # what still waits is answered UNAVAILABLE now

    timer = asyncio.create_task(end_of_drain())
    # New calls are refused from here; received ones run until answered, or until drain_s.
    await server.stop(grace=drain + 1.0)
    timer.cancel()
    await state.batcher.stop()
    state.streams.shutdown(wait=False, cancel_futures=True)
    state.log("stopped")
    return 0


def run(
    config_path: Path, *, port: int | None = None, host: str = "[::]", model_dir: Path | None = None
) -> int:
    try:
        code = asyncio.run(serve(config_path, port=port, host=host, model_dir=model_dir))
    except KeyboardInterrupt:
        code = 130
    if any(thread.name.startswith("model") for thread in threading.enumerate() if thread.is_alive()):
        # A model call still running past drain_s: Python cannot stop its thread, and waiting
        # for it would let the model, not drain_s, decide when the process exits.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
