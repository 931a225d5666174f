"""The server under sustained abuse, with its memory over time (issue: harden the model server).

The runtime serves the robustness suite's probe model (tests/runtime/harness.py) on
127.0.0.1 while, for OMI_SOAK_S seconds (default 60), clients in threads keep up: floods above
max_in_flight, streams cancelled after a few items, streams never read, idle streams, slow
calls past request_s, undecodable bytes, oversized answers and OMI items of hostile bytes.
Every 5 s it prints the server's RSS, the slowest health check of the interval and the status
codes seen; at the end, the peak RSS and whether health ever missed 100 ms.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from omi_build.runtime.protocol import model2_template_pb2 as omi  # noqa: E402
from omi_build.runtime.protocol import model2_template_pb2_grpc as omi_grpc  # noqa: E402
from tests.runtime.harness import health_ms, infer_request, inference, serving  # noqa: E402

SETTINGS: dict[str, Any] = {
    "concurrency": {"max_in_flight": 16, "workers": 1},
    "timeouts": {"request_s": 1.0, "stream_idle_s": 2.0, "drain_s": 2.0},
}


def _abuse(address: str, stop: threading.Event, codes: collections.Counter[str], kind: int) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = inference(channel)
        run = omi_grpc.ModzyModelStub(channel)  # type: ignore[no-untyped-call]
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        while not stop.is_set():
            try:
                if kind == 0:  # flood of small calls
                    stub.ModelInfer(infer_request([1.0] * 8), timeout=5)
                elif kind == 1:  # a stream cancelled after a few items
                    stream = stub.ModelStreamInfer(iter([infer_request([1_000_000.0])]))
                    for _, _item in zip(range(5), stream, strict=False):
                        pass
                    stream.cancel()
                elif kind == 2:  # a stream never read, abandoned after a second
                    stream = stub.ModelStreamInfer(iter([infer_request([1_000_000.0])]))
                    time.sleep(1)
                    stream.cancel()
                elif kind == 3:  # past request_s
                    stub.ModelInfer(infer_request([-1.5]), timeout=5)
                elif kind == 4:  # undecodable bytes
                    raw(os.urandom(32), timeout=5)
                elif kind == 5:  # an answer over the message limit, from a few KB
                    stub.ModelInfer(infer_request([0.0] * 5000), timeout=5)
                else:  # OMI items of hostile bytes
                    items = [
                        omi.InputItem(input={"x": b"[" * 3000}),
                        omi.InputItem(input={"x": os.urandom(64)}),
                    ]
                    answer = run.Run(omi.RunRequest(inputs=items), timeout=5)
                    codes[f"OMI {answer.status_code}"] += 1
                    continue
                codes["OK"] += 1
            except grpc.RpcError as exc:
                code = exc.code()
                codes[code.name if code else "?"] += 1


def main() -> int:
    duration = float(os.environ.get("OMI_SOAK_S", "60"))
    with (
        tempfile.TemporaryDirectory(prefix="omi-soak-") as scratch,
        serving(Path(scratch), **SETTINGS) as server,
    ):
        stop = threading.Event()
        codes: collections.Counter[str] = collections.Counter()
        threads = [
            threading.Thread(target=_abuse, args=(server.address, stop, codes, kind % 7), daemon=True)
            for kind in range(21)
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        peak_rss, worst_health = 0.0, 0.0
        print(f"{'t (s)':>6} {'RSS MB':>8} {'health ms (worst)':>18}  status codes so far")
        while time.monotonic() - started < duration:
            interval_end = time.monotonic() + 5
            worst = 0.0
            while time.monotonic() < interval_end:
                with contextlib.suppress(grpc.RpcError, AssertionError):
                    worst = max(worst, health_ms(server.address))
                time.sleep(0.2)
            rss = server.rss_mb()
            peak_rss, worst_health = max(peak_rss, rss), max(worst_health, worst)
            shown = ", ".join(f"{name} {count}" for name, count in codes.most_common())
            print(f"{time.monotonic() - started:6.0f} {rss:8.1f} {worst:18.1f}  {shown}", flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        alive = server.process.poll() is None
        print(f"peak RSS {peak_rss:.1f} MB; worst health check {worst_health:.1f} ms; server alive: {alive}")
        return 0 if alive and worst_health < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
