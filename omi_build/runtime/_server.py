"""The model server: one port for OMI v1, OIP v2, health and reflection; drains on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import grpc

from ._batcher import Batcher, batch_limit
from ._device import probe
from ._health import NOT_SERVING, SERVING, HealthService, ReflectionService, add_reflection
from ._limits import Deadlines, Gate, Guarded
from ._model import StartupError, load_model, read_config, verify_files
from ._processes import READY, SERVE, SHUTDOWN
from ._startup import log_event, process_age_s, resolve_port

RUNTIME_VERSION = "1"
OIP_SERVICE = "inference.GRPCInferenceService"
OMI_SERVICE = "ModzyModel"


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
    process: int | None = None  # which of several server processes, when there are several

    @property
    def loaded(self) -> bool:
        """Whether model calls can be made: true from loading to exit, draining included, so
        requests already received when SIGTERM came are answered, not refused."""
        return self.batcher is not None

    def log(self, event: str, *, level: str = "info", **fields: Any) -> None:
        if self.process is not None:
            fields["process"] = self.process
        log_event(self.log_stream, event, level=level, **fields)


class SupervisorLink:
    """A server process's line to the supervisor of several (see _processes): it says when it
    is ready and when an OMI Shutdown came; it hears when all are ready. If the supervisor
    goes away, the process drains and exits."""

    def __init__(self, fd: int) -> None:
        self._socket = socket.socket(fileno=fd)
        self._socket.setblocking(False)
        self.serving = asyncio.Event()
        self._listening: asyncio.Task[None] | None = None

    def send(self, message: bytes) -> None:
        with contextlib.suppress(OSError):
            self._socket.send(message + b"\n")

    def listen(self, gone: Callable[[], None]) -> None:
        self._listening = asyncio.create_task(self._listen(gone))

    async def _listen(self, gone: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        buffer = b""
        while True:
            try:
                data = await loop.sock_recv(self._socket, 4096)
            except OSError:
                data = b""
            if not data:
                gone()
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == SERVE:
                    self.serving.set()

    def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
        self._socket.close()


async def serve(
    config_path: Path,
    *,
    port: int | None = None,
    host: str = "[::]",
    model_dir: Path | None = None,
    link: SupervisorLink | None = None,
    process: int | None = None,
) -> int:
    """Serve until SIGTERM, SIGINT or an OMI Shutdown; return the exit code. With `link`, this
    is one of several processes on the port: it reports SERVING once the supervisor says all
    are ready, and the supervisor checks the model files."""
    from ._oip import CHECKS_ITSELF as OIP_CHECKS_ITSELF  # noqa: PLC0415 - loaded after the port is open
    from ._oip import CODECS as OIP_CODECS  # noqa: PLC0415
    from ._oip import InferenceService  # noqa: PLC0415
    from ._omi import ModzyService  # noqa: PLC0415

    state = State(process=process)
    try:
        config = read_config(config_path, model_dir)
        listen = resolve_port(config.raw, port)
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
            # one of several processes shares the port; alone, a port in use is an error
            ("grpc.so_reuseport", 1 if link is not None else 0),
        ],
        # The model's limit is the Gate (RESOURCE_EXHAUSTED, health exempt); grpcio's own,
        # which would cancel health checks too, is only a backstop far above it.
        maximum_concurrent_rpcs=max(4 * max_in_flight, max_in_flight + 1024),
    )
    protocols = serving["protocols"]
    services = [s for s, p in ((OMI_SERVICE, "omi-v1"), (OIP_SERVICE, "oip-v2")) if p in protocols]
    health = HealthService(services)
    stop = asyncio.Event()

    def shutdown() -> None:  # OMI's Shutdown: every process of the server drains
        stop.set()
        if link is not None:
            link.send(SHUTDOWN)

    from .protocol import grpc_predict_v2_pb2_grpc, health_pb2_grpc, model2_template_pb2_grpc  # noqa: PLC0415

    # undecodable requests: INVALID_ARGUMENT on every method; ModelInfer's own wire codec
    # the model calls are looked up by name; everything else by service
    hot = frozenset({(OIP_SERVICE, "ModelInfer"), (OMI_SERVICE, "Run")})
    guarded = Guarded(server, OIP_CODECS, OIP_CHECKS_ITSELF, hot)
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
            ModzyService(config, state, shutdown), guarded
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
    if link is not None:
        link.listen(stop.set)  # the supervisor gone: drain and exit
    # the supervisor of several processes checks the files once, for all
    verifying = loop.run_in_executor(None, verify_files, config) if link is None else None

    async def load_and_verify() -> Any:
        device = await loop.run_in_executor(None, probe, config.raw.get("device"))
        if device.missing:
            state.log("no_gpu", level="warning", device=device.name, message=device.missing)
        else:
            state.log("device", device=device.name, detail=device.detail or None)
        model = await loop.run_in_executor(None, load_model, config, device.name)
        if verifying is not None:
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
    max_batch, uniform = batch_limit([spec.shape for spec in config.inputs], int(batching["max_batch_size"]))
    state.batcher = Batcher(
        state.model.predict,
        config.outputs,
        max_batch_size=max_batch,
        max_wait_ms=float(batching["max_wait_ms"]),
        workers=int(serving["concurrency"]["workers"]),
        uniform=uniform,
    )
    state.batcher.start()
    # What start-up made (modules, the model) lives as long as the process: full
    # collections skip it from here on (they took ~10 ms each with it, a pause every few
    # seconds under load). Garbage is collected first, so none of it is kept for good.
    gc.collect()
    gc.freeze()
    age = process_age_s()
    startup_ms = round(age * 1000) if age is not None else None
    if link is not None:
        link.send(READY)
        state.log("process_ready", startup_ms=startup_ms)
        waiting = [asyncio.ensure_future(link.serving.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
    if not stop.is_set():
        state.ready = True
        health.set(SERVING)
        if link is None:
            state.log("serving", startup_ms=startup_ms)
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
    if link is not None:
        link.close()
    state.log("stopped")
    return 0


def run(
    config_path: Path,
    *,
    port: int | None = None,
    host: str = "[::]",
    model_dir: Path | None = None,
    supervised_by: int | None = None,
    process: int | None = None,
) -> int:
    async def main() -> int:
        link = SupervisorLink(supervised_by) if supervised_by is not None else None
        return await serve(config_path, port=port, host=host, model_dir=model_dir, link=link, process=process)

    try:
        code = asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    if any(thread.name.startswith("model") for thread in threading.enumerate() if thread.is_alive()):
        # A model call still running past drain_s: Python cannot stop its thread, and waiting
        # for it would let the model, not drain_s, decide when the process exits.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
