"""The server under abuse: floods, slow and abandoned streams, deadlines, drains, hostile bytes.

Each case asserts the status codes, that health keeps answering SERVING within 100 ms, and
that the server's RSS stays bounded. Every loop is bounded in count and time; traffic goes to
127.0.0.1 only. Marked integration: they start processes and open sockets.
"""

from __future__ import annotations

import io
import json
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from omi_build.runtime.protocol import grpc_predict_v2_pb2 as oip
from omi_build.runtime.protocol import model2_template_pb2 as omi
from omi_build.runtime.protocol import model2_template_pb2_grpc as omi_grpc

from .harness import MODEL, Server, health_ms, infer_request, inference, serving

pytestmark = pytest.mark.integration
RSS_BOUND_MB = 300
HEALTH_BOUND_MS = 100


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _details(stub: object) -> tuple[grpc.StatusCode, str]:
    try:
        stub.ModelInfer(infer_request([1.0]), timeout=30)  # type: ignore[attr-defined]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _healthy(server: Server) -> None:
    assert health_ms(server.address) < HEALTH_BOUND_MS
    assert server.rss_mb() < RSS_BOUND_MB


def test_a_flood_above_max_in_flight_is_resource_exhausted_and_health_answers(tmp_path: Path) -> None:
    limits = {"max_in_flight": 4, "workers": 1}
    with (
        serving(tmp_path, concurrency=limits) as server,
        grpc.insecure_channel(server.address) as channel,
        ThreadPoolExecutor(64) as pool,
    ):
        stub = inference(channel)
        slow = [
            pool.submit(_code, lambda: stub.ModelInfer(infer_request([-2.0]), timeout=20)) for _ in range(4)
        ]
        time.sleep(0.5)  # the four slow calls hold every slot
        burst = [
            pool.submit(_code, lambda: stub.ModelInfer(infer_request([1.0]), timeout=20)) for _ in range(200)
        ]
        _healthy(server)
        codes = [future.result() for future in burst]
        assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OK}
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 150  # refused, never CANCELLED
        assert [future.result() for future in slow] == [grpc.StatusCode.OK] * 4


def test_idle_streams_do_not_starve_health_and_end_after_stream_idle_s(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "concurrency": {"max_in_flight": 4, "workers": 1},
        "timeouts": {"stream_idle_s": 1.5},
    }
    with serving(tmp_path, **settings) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference(channel)
        never = threading.Event()

        def silent() -> object:
            never.wait(10)
            yield from ()

        streams = [stub.ModelStreamInfer(silent()) for _ in range(4)]
        time.sleep(0.5)
        _healthy(server)
        assert (
            _code(lambda: stub.ModelInfer(infer_request([1.0]), timeout=5))
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        started = time.monotonic()
        for stream in streams:
            with pytest.raises(grpc.RpcError) as exc:
                list(stream)
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        never.set()
        assert _code(lambda: stub.ModelInfer(infer_request([1.0]), timeout=5)) == grpc.StatusCode.OK


def test_a_cancelled_stream_stops_its_generator_and_never_blocks_unary_calls(tmp_path: Path) -> None:
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference(channel)
        stream = stub.ModelStreamInfer(iter([infer_request([1_000_000.0])]))
        for _, _response in zip(range(10), stream, strict=False):
            pass
        stream.cancel()
        time.sleep(0.5)  # the generator notices at its next item
        before = server.cpu_s()
        time.sleep(2)
        assert server.cpu_s() - before < 0.5  # nothing keeps generating
        started = time.monotonic()
        assert _code(lambda: stub.ModelInfer(infer_request([1.0]), timeout=5)) == grpc.StatusCode.OK
        assert time.monotonic() - started < 1
        _healthy(server)


def test_a_client_that_never_reads_costs_bounded_memory(tmp_path: Path) -> None:
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference(channel)
        start_rss = server.rss_mb()
        stream = stub.ModelStreamInfer(iter([infer_request([1_000_000.0])]))
        next(stream)  # started, then never read again
        time.sleep(3)
        assert server.rss_mb() - start_rss < 50  # unbounded, it grew ~23 MB/s
        # and a unary call still gets the model: streams run on a pool of their own
        assert _code(lambda: stub.ModelInfer(infer_request([1.0]), timeout=5)) == grpc.StatusCode.OK
        stream.cancel()
        _healthy(server)


def test_request_s_is_enforced_on_every_protocol(tmp_path: Path) -> None:
    with (
        serving(tmp_path, timeouts={"request_s": 1.0}) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = inference(channel)
        started = time.monotonic()
        assert (
            _code(lambda: stub.ModelInfer(infer_request([-3.0]), timeout=10))
            == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        assert time.monotonic() - started < 2.5
        run = omi_grpc.ModzyModelStub(channel).Run(
            omi.RunRequest(inputs=[omi.InputItem(input={"x": b"[-3.0]"})]), timeout=10
        )
        assert not run.outputs[0].success
        assert b"request_s" in run.outputs[0].output["error"]
        time.sleep(2.5)  # the model thread finishes the abandoned calls
        assert _code(lambda: stub.ModelInfer(infer_request([1.0]), timeout=5)) == grpc.StatusCode.OK


def test_drain_s_bounds_the_exit_and_late_calls_are_unavailable(tmp_path: Path) -> None:
    with (
        serving(tmp_path, timeouts={"drain_s": 1.0}) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = inference(channel)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(_code, lambda: stub.ModelInfer(infer_request([-20.0]), timeout=30))
            time.sleep(0.5)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=10)
            assert time.monotonic() - started < 4  # not the model's 20 s
            assert slow.result() == grpc.StatusCode.UNAVAILABLE


def test_sigterm_answers_every_request_already_received(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "concurrency": {"max_in_flight": 64, "workers": 1},
        "timeouts": {"drain_s": 20.0},
    }
    with serving(tmp_path, **settings) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference(channel)
        with ThreadPoolExecutor(30) as pool:
            calls = [
                pool.submit(_code, lambda: stub.ModelInfer(infer_request([-0.2]), timeout=30))
                for _ in range(20)
            ]
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            late = [pool.submit(_details, stub) for _ in range(10)]  # arriving as the drain starts
            codes = [call.result() for call in calls]
            answers = [call.result() for call in late]
        assert codes == [grpc.StatusCode.OK] * 20
        # A call the server took is answered; one it no longer takes is refused by the
        # transport, never by a handler that has stopped trusting the model ("not ready").
        assert all(code == grpc.StatusCode.OK or "not ready" not in details for code, details in answers)
        assert server.process.wait(timeout=30) == 0


def test_client_strings_are_quoted_short_and_bad_requests_are_cheap(tmp_path: Path) -> None:
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = inference(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(infer_request([1.0], name="m" * 20_000), timeout=5)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(exc.value.details()) < 300
        request = infer_request([1.0] * 1000)
        for _ in range(1000):
            request.outputs.add(name="y")
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(request, timeout=5)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "more than once" in exc.value.details()
        big = oip.ModelInferRequest(model_name=MODEL)  # 20 KB asking for a 5 MB answer
        big.inputs.add(name="x", datatype="FP32", shape=[5000, 1])
        big.raw_input_contents.append(np.zeros(5000, "<f4").tobytes())
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(big, timeout=5)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 1  # refused before the model ran
        assert max(len(line) for line in server.log.read_text().splitlines()) < 2000
        _healthy(server)


def test_undecodable_and_random_bytes_are_invalid_argument(tmp_path: Path) -> None:
    methods = [
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelMetadata",
        "/ModzyModel/Run",
        "/ModzyModel/Status",
        "/grpc.health.v1.Health/Check",
    ]
    generator = random.Random(9)  # noqa: S311 - reproducible fuzz bytes, not secrets
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        for method in methods:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
            seen = set()
            for _ in range(60):
                garbage = bytes(generator.randrange(256) for _ in range(generator.randrange(1, 64)))
                try:
                    call(garbage, timeout=5)
                    seen.add(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    seen.add(exc.code())
            assert grpc.StatusCode.UNKNOWN not in seen, method
            assert seen <= {
                grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            }, (method, seen)  # fmt: skip
        assert _code(lambda: channel.unary_unary(methods[0])(b"\xff\xff\xff", timeout=5)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        _healthy(server)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_omi_run_answers_400_for_every_malformed_input_and_strict_json(tmp_path: Path) -> None:
    huge_header = _npy(np.zeros((1,), "<f4")).replace(b"(1,)", b"(1099511627776,)", 1)
    bad = {
        "deep JSON": b"[" * 5000 + b"]" * 5000,
        "4 TiB .npy": huge_header,
        "complex .npy": _npy(np.zeros((1,), np.complex64)),
        "datetime .npy": _npy(np.zeros((1,), "datetime64[s]")),
        "text JSON": b'["a"]',
    }
    with serving(tmp_path) as server, grpc.insecure_channel(server.address) as channel:
        stub = omi_grpc.ModzyModelStub(channel)
        for what, data in bad.items():
            answer = stub.Run(omi.RunRequest(inputs=[omi.InputItem(input={"x": data})]), timeout=10)
            assert answer.status_code == 400, what
            assert len(answer.message) < 400, what
        answer = stub.Run(omi.RunRequest(inputs=[omi.InputItem(input={"x": b"[777.0]"})]), timeout=10)
        assert answer.status_code == 200
        strict = json.loads(answer.outputs[0].output["results.json"], parse_constant=_no_constants)
        assert strict["y"] == [None]  # NaN as null: JavaScript's and Go's parsers read it
        many = omi.RunRequest(inputs=[omi.InputItem(input={"x": b"[1.0]"})] * 10_000)
        answer = stub.Run(many, timeout=10)
        assert answer.status_code == 400
        assert "at most" in answer.message
        _healthy(server)


def _no_constants(name: str) -> object:
    msg = f"{name} is not JSON"
    raise ValueError(msg)


def test_concurrent_requests_batched_on_one_connection_each_get_their_own_answer(tmp_path: Path) -> None:
    """Many streams on one connection: a fast model's calls are shared by the requests that
    arrive together, and every answer is still its own request's (rows, id), in both forms."""
    import asyncio  # noqa: PLC0415

    from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: PLC0415

    async def clients(address: str) -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)

            async def client(number: int) -> int:
                checked = 0
                for sent in range(40):
                    rows = 1 + (number + sent) % 3
                    values = np.arange(rows, dtype=np.float32) + 1000 * number + sent
                    request = oip.ModelInferRequest(model_name=MODEL, id=f"{number}-{sent}")
                    request.inputs.add(name="x", datatype="FP32", shape=[rows, 1])
                    if sent % 2:
                        request.raw_input_contents.append(values.tobytes())
                    else:
                        request.inputs[0].contents.fp32_contents.extend(values.tolist())
                    answer = await stub.ModelInfer(request, timeout=30)
                    assert answer.id == request.id
                    y = (
                        np.frombuffer(answer.raw_output_contents[0], np.float32)
                        if sent % 2
                        else np.array(answer.outputs[0].contents.fp32_contents, np.float32)
                    )
                    assert y.tolist() == values.tolist()
                    assert list(answer.outputs[1].shape) == [rows, 256]
                    checked += 1
                return checked

            return sum(await asyncio.gather(*(client(number) for number in range(16))))

    settings: dict[str, Any] = {"batching": {"max_batch_size": 32, "max_wait_ms": 2}}
    with serving(tmp_path, concurrency={"max_in_flight": 64}, **settings) as server:
        assert asyncio.run(asyncio.wait_for(clients(server.address), timeout=120)) == 16 * 40
        _healthy(server)


def test_clients_that_give_up_mid_batch_leave_the_others_answered(tmp_path: Path) -> None:
    """Half the clients cancel their calls after a millisecond, while batches gather: the
    other half still get every answer their own, and the server stays healthy."""
    import asyncio  # noqa: PLC0415

    from omi_build.runtime.protocol import grpc_predict_v2_pb2_grpc as oip_grpc  # noqa: PLC0415

    async def clients(address: str) -> tuple[int, int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)

            async def client(number: int) -> tuple[int, int]:
                answered = gave_up = 0
                for sent in range(30):
                    value = float(1000 * number + sent)
                    request = oip.ModelInferRequest(model_name=MODEL)
                    request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
                    request.raw_input_contents.append(np.float32(value).tobytes())
                    call = stub.ModelInfer(request, timeout=30)
                    if number % 2:
                        await asyncio.sleep(0.001)
                        call.cancel()
                        gave_up += 1
                        continue
                    answer = await call
                    assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [value]
                    answered += 1
                return answered, gave_up

            results = await asyncio.gather(*(client(number) for number in range(16)))
            return sum(r[0] for r in results), sum(r[1] for r in results)

    settings: dict[str, Any] = {"batching": {"max_batch_size": 32, "max_wait_ms": 5}}
    with serving(tmp_path, concurrency={"max_in_flight": 64}, **settings) as server:
        answered, gave_up = asyncio.run(asyncio.wait_for(clients(server.address), timeout=120))
        assert (answered, gave_up) == (8 * 30, 8 * 30)
        _healthy(server)
        with grpc.insecure_channel(server.address) as channel:
            assert _details(inference(channel))[0] == grpc.StatusCode.OK
