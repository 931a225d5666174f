"""Several server processes on one port under the supervisor: SERVING only when all are ready,
one drain for all, a dead process replaced, a failed start or a taken port a clear error.

Marked integration: they start processes and open sockets (127.0.0.1 only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest

from omi_build.runtime.protocol import health_pb2, health_pb2_grpc
from omi_build.runtime.protocol import model2_template_pb2 as omi
from omi_build.runtime.protocol import model2_template_pb2_grpc as omi_grpc

from .harness import PROBE, Server, free_port, infer_request, inference, serving, start, write_package

pytestmark = pytest.mark.integration
TWO = {"OMI_PROCESSES": "2"}

# The first process to load finds the flag file absent, creates it and loads at once; the
# second sleeps 2 s, so there is a time when one process is ready and the other is not.
SLOW_SECOND = (
    PROBE
    + """

import os
from pathlib import Path


def _load(self, model_dir):
    flag = Path(model_dir).parent / "first-loaded"
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(2)


Probe.load = _load
"""
)
FAILS_TO_LOAD = (
    PROBE + "\n\ndef _load(self, model_dir):\n    raise RuntimeError('no weights')\n\n\nProbe.load = _load\n"
)


def _events(server: Server) -> list[dict[str, object]]:
    return server.events()


def _wait_for(server: Server, event: str, count: int = 1, timeout: float = 30) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in _events(server) if e.get("event") == event]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    msg = f"no {count} x {event} in {server.log.read_text()}"
    raise AssertionError(msg)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _listeners(port: int) -> int:
    """Listening TCP sockets on 127.0.0.1:port (gRPC binds it as v4-mapped IPv6 or as IPv4)."""
    wanted = (f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}")
    rows = [
        row.split()
        for name in ("tcp", "tcp6")
        for row in Path(f"/proc/net/{name}").read_text().splitlines()[1:]
    ]
    return sum(1 for row in rows if row[1] in wanted and row[3] == "0A")


def _status(address: str) -> int:
    with grpc.insecure_channel(address) as channel:  # a new connection: any of the processes
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(answer.status)


def _gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_processes_share_the_port_and_serving_waits_for_every_one(tmp_path: Path) -> None:
    config = write_package(tmp_path, SLOW_SECOND)
    server = start(tmp_path, config, free_port(), TWO)
    try:
        _wait_for(server, "process_ready")
        assert not any(e.get("event") == "serving" for e in _events(server))
        statuses = {_status(server.address) for _ in range(6)}  # one process ready, one loading
        assert statuses == {health_pb2.HealthCheckResponse.NOT_SERVING}
        serving_event = _wait_for(server, "serving")[0]
        assert serving_event["processes"] == 2
        assert set(serving_event["rss_mib"]) == {"0", "1"}  # type: ignore[call-overload]
        assert all(_status(server.address) == health_pb2.HealthCheckResponse.SERVING for _ in range(6))
        assert _listeners(server.port) == 2  # two listeners, one port (SO_REUSEPORT)
        for _ in range(8):  # new connections, spread over both
            with grpc.insecure_channel(server.address) as channel:
                answer = inference(channel).ModelInfer(infer_request([1.5, 2.5]), timeout=10)
                assert list(answer.outputs[0].shape) == [2, 1]
        assert len(_children(server.process.pid)) == 2
    finally:
        server.process.kill()
        server.process.wait(timeout=30)


def test_sigterm_drains_every_process_and_leaves_none(tmp_path: Path) -> None:
    with serving(tmp_path, env=TWO) as server:
        children = _children(server.process.pid)
        assert len(children) == 2
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert _gone(children)
        stopped = [e for e in _events(server) if e.get("event") == "stopped"]
        assert sorted(str(e.get("process")) for e in stopped) == ["0", "1", "None"]


def test_an_omi_shutdown_on_any_process_stops_them_all(tmp_path: Path) -> None:
    with serving(tmp_path, env=TWO) as server:
        children = _children(server.process.pid)
        with grpc.insecure_channel(server.address) as channel:
            answer = omi_grpc.ModzyModelStub(channel).Shutdown(omi.ShutdownRequest(), timeout=10)
        assert answer.status_code == 200
        assert server.process.wait(timeout=30) == 0
        assert _gone(children)


def test_a_process_that_dies_while_serving_is_replaced(tmp_path: Path) -> None:
    with serving(tmp_path, env=TWO) as server:
        victim = _children(server.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        restarted = _wait_for(server, "process_restarted")[0]
        assert restarted["code"] == -signal.SIGKILL
        _wait_for(server, "process_ready", count=3)
        deadline = time.monotonic() + 10
        while len(_children(server.process.pid)) != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert victim not in _children(server.process.pid)
        for _ in range(6):
            with grpc.insecure_channel(server.address) as channel:
                assert inference(channel).ModelInfer(infer_request([1.0]), timeout=10).outputs
        assert _status(server.address) == health_pb2.HealthCheckResponse.SERVING


def test_the_processes_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with serving(tmp_path, env=TWO, timeouts={"drain_s": 1.0}) as server:
        children = _children(server.process.pid)
        server.process.kill()
        server.process.wait(timeout=10)
        assert _gone(children), "orphaned server processes kept running"


def test_a_process_that_fails_to_start_fails_the_server(tmp_path: Path) -> None:
    config = write_package(tmp_path, FAILS_TO_LOAD)
    server = start(tmp_path, config, free_port(), TWO)
    assert server.process.wait(timeout=60) == 1
    events = _events(server)
    assert any(e["event"] == "startup_failed" and "no weights" in str(e["message"]) for e in events)
    assert any(e["event"] == "process_failed" for e in events)
    assert not any(e["event"] == "serving" for e in events)


def test_a_port_in_use_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    config = write_package(tmp_path)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even one that shares
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = start(tmp_path, config, port, TWO)
        assert server.process.wait(timeout=30) == 1
    failed = [e for e in _events(server) if e["event"] == "startup_failed"]
    assert failed
    assert f"cannot listen on port {port}: it is in use" in str(failed[0]["message"])


def test_changed_model_files_fail_every_process(tmp_path: Path) -> None:
    config = write_package(tmp_path)
    raw = json.loads(config.read_text())
    raw["model"]["files"]["model.py"] = "sha256:" + "0" * 64
    config.write_text(json.dumps(raw))
    server = start(tmp_path, config, free_port(), TWO)
    assert server.process.wait(timeout=60) == 1
    failed = [e for e in _events(server) if e["event"] == "startup_failed"]
    assert failed
    assert "changed after the build" in str(failed[0]["message"])
