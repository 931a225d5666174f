"""Several server processes on one port, so a Python server uses every CPU it is given.

The supervisor (PID 1 in the container) imports neither gRPC nor numpy. It checks the port is
free, starts `processes` full servers, each loading the model itself and listening on the
same port with SO_REUSEPORT (the kernel spreads connections across them), and checks the model
files once while they load. Each process reports on its own socketpair when it is ready; only
when all are (and the files check out) does it tell them all to report SERVING, so a health
check that reaches any of them means the whole server is ready. SIGTERM or SIGINT, or an OMI
Shutdown received by any process, drains them all. A process that dies while serving is
replaced (at most RESTARTS times in RESTART_WINDOW_S); one that fails while starting fails the
whole server, since the next would fail the same way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._startup import StartupError, log_event, process_age_s, verify_files

RESTARTS = 5
RESTART_WINDOW_S = 60.0
READY, SERVE, SHUTDOWN = b"ready", b"serve", b"shutdown"


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def check_port_free(host: str, port: int) -> None:
    """StartupError if anything listens on the port already. Binding without SO_REUSEPORT
    fails even against a listener that set it, so another server is never joined silently."""
    address = host.strip("[]") or "::"
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((address, port))
        except OSError as exc:
            reason = "it is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            msg = f"cannot listen on port {port}: {reason}"
            raise StartupError(msg) from None


@dataclass
class _Child:
    index: int
    process: subprocess.Popen[bytes]
    link: socket.socket
    buffer: bytes = b""
    ready: bool = False
    serving: bool = False


@dataclass
class Supervisor:
    config_path: Path
    raw: dict[str, Any]
    count: int
    port: int
    host: str
    model_dir: Path | None
    package: str = field(default_factory=lambda: __package__ or "omi_runtime")
    children: dict[int, _Child] = field(default_factory=dict)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _stopping: bool = False
    _failed: bool = False
    _serving: bool = False
    _restarts: list[float] = field(default_factory=list)
    _signalled: list[int] = field(default_factory=list)
    _verified: list[BaseException | None] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)
    _stop_deadline: float | None = None

    def log(self, event: str, *, level: str = "info", **fields: Any) -> None:
        log_event(sys.stderr, event, level=level, **fields)

    # -- processes -------------------------------------------------------------------------
    def _start(self, index: int) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable, "-m", self.package, "serve", str(self.config_path),
            "--port", str(self.port), "--host", self.host,
            "--supervised-by", str(theirs.fileno()), "--process-index", str(index),
        ]  # fmt: skip
        if self.model_dir is not None:
            command += ["--model-dir", str(self.model_dir)]
        try:
            process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        child = _Child(index, process, ours)
        self.children[index] = child
        self._selector.register(ours, selectors.EVENT_READ, child)

    def _signal_all(self, signum: int) -> None:
        for child in self.children.values():
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)

    def _stop(self, reason: str) -> None:
        if not self._stopping:
            self._stopping = True
            self.log("stopping_processes", reason=reason, processes=len(self.children))
            self._signal_all(signal.SIGTERM)

    def _read(self, child: _Child) -> None:
        try:
            data = child.link.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(child.link)
            return
        child.buffer += data
        while b"\n" in child.buffer:
            line, child.buffer = child.buffer.split(b"\n", 1)
            if line == READY:
                child.ready = True
            elif line == SHUTDOWN:
                self._stop("shutdown requested over OMI")

    def _send_serve(self, child: _Child) -> None:
        try:
            child.link.send(SERVE + b"\n")
            child.serving = True
        except OSError:
            pass  # it died: _reap sees it

    def _reap(self) -> None:
        for index, child in list(self.children.items()):
            code = child.process.poll()
            if code is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(child.link)
            child.link.close()
            del self.children[index]
            if self._stopping:
                if code != 0:
                    self._failed = True
                continue
            if not child.serving:
                self.log("process_failed", level="error", process=index, code=code)
                self._failed = True
                self._stop(f"process {index} exited with code {code} while starting")
                continue
            now = time.monotonic()
            self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S]
            if len(self._restarts) >= RESTARTS:
                self.log("process_failed", level="error", process=index, code=code)
                self._failed = True
                self._stop(f"{RESTARTS} processes died within {RESTART_WINDOW_S:g} s")
                continue
            self._restarts.append(now)
            self.log("process_restarted", level="warning", process=index, code=code)
            self._start(index)

    # -- the whole -------------------------------------------------------------------------
    def run(self) -> int:  # noqa: C901 - start, the loop, and the clean-up in one place
        try:
            check_port_free(self.host, self.port)
            self._start(0)  # the first process, here, so a Python that cannot start fails clearly
        except OSError as exc:
            message = f"cannot start a server process ({sys.executable}): {exc.strerror or exc}"
            self.log("startup_failed", level="error", message=f"{message}; set OMI_PROCESSES=1")
            return 1
        except StartupError as exc:
            self.log("startup_failed", level="error", message=str(exc))
            return 1
        wake_read, wake_write = socket.socketpair()
        for end in (wake_read, wake_write):
            end.setblocking(False)
        self._selector.register(wake_read, selectors.EVENT_READ, None)

        def on_signal(signum: int, _frame: Any) -> None:
            self._signalled.append(signum)
            with contextlib.suppress(OSError):
                wake_write.send(b"\0")  # the select below wakes at once

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for index in range(1, self.count):
                self._start(index)
            threading.Thread(target=self._verify, name="verify-files", daemon=True).start()
            while self.children:
                for key, _ in self._selector.select(timeout=0.1):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            wake_read.recv(64)
                    else:
                        self._read(key.data)
                self._step()
                self._reap()
        finally:
            self._signal_all(signal.SIGKILL)
            for child in self.children.values():
                child.process.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._selector.close()
            wake_read.close()
            wake_write.close()
        self.log("stopped", processes=self.count)
        return 1 if self._failed else 0

    def _verify(self) -> None:
        directory = self.model_dir or Path(self.raw["model"]["directory"])
        try:
            verify_files(self.raw, directory)
            self._verified.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported by _step, in the main thread
            self._verified.append(exc)

    def _fail(self, message: str) -> None:
        self.log("startup_failed", level="error", message=message)
        self._failed = True
        self._stop(message)

    def _step(self) -> None:  # noqa: C901 - the supervisor's states, in the order it meets them
        """What the supervisor does after each wake-up, in order."""
        timeouts = self.raw["serving"]["timeouts"]
        if self._signalled and not self._stopping:
            self._stop(f"signal {signal.Signals(self._signalled[0]).name}")
        if self._stopping:
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + float(timeouts["drain_s"]) + 10
            elif time.monotonic() > self._stop_deadline:
                self._signal_all(signal.SIGKILL)  # past its drain: it cannot stop itself
            return
        if self._verified and self._verified[0] is not None:
            self._fail(str(self._verified[0]))
        elif not self._serving:
            if self._verified and all(c.ready for c in self.children.values()):
                self._all_ready()
            elif time.monotonic() - self._started > float(timeouts["startup_s"]) + 5:
                self._fail(f"not every process was ready within {timeouts['startup_s']:g} s")
        else:
            for child in self.children.values():
                if child.ready and not child.serving:
                    self._send_serve(child)  # a replacement joins the others

    def _all_ready(self) -> None:
        self._serving = True
        for child in self.children.values():
            self._send_serve(child)
        age = process_age_s()
        self.log(
            "serving",
            startup_ms=round(age * 1000) if age is not None else None,
            processes=self.count,
            port=self.port,
            rss_mib={str(c.index): _rss_mib(c.process.pid) for c in self.children.values()},
            supervisor_rss_mib=_rss_mib(os.getpid()),
        )


def supervise(
    config_path: Path, raw: dict[str, Any], *, count: int, port: int, host: str, model_dir: Path | None
) -> int:
    return Supervisor(config_path, raw, count, port, host, model_dir).run()
