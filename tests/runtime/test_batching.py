"""Batching of a fast model on the event loop (Batcher.in_turn), in-process.

gRPC hands a server's handlers their requests one turn of the loop at a time; these tests
do the same: each client task waits a few turns before it asks, as a request does while
gRPC receives it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from omi_build.runtime._batcher import Batcher, ModelError, batch_limit
from omi_build.runtime.tensors import TensorSpec

Arrays = dict[str, np.ndarray]


class Model:
    """y = the first column of x; records the rows of every call; fails on a negative x."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, inputs: Arrays) -> Arrays:
        x = inputs["x"]
        self.calls.append(len(x))
        if (x < 0).any():
            msg = "negative"
            raise RuntimeError(msg)
        return {"y": x[:, 0].copy()}


def _fast(model: Model, *, max_batch_size: int = 32, max_wait_ms: float = 100) -> Batcher:
    outputs = (TensorSpec("y", "FP32", (-1,), (), None, ""),)
    batcher = Batcher(
        model.predict,
        outputs,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        workers=1,
        uniform=True,
    )
    batcher._predict_s, batcher.fast = 0.0, True  # measured fast already: the event-loop path
    return batcher


def _request(value: float, rows: int = 1) -> Arrays:
    return {"x": np.full((rows, 2), value, np.float32)}


async def _arriving(batcher: Batcher, value: float, turns: int, rows: int = 1) -> Arrays:
    for _ in range(turns):
        await asyncio.sleep(0)  # gRPC receiving it
    return await batcher.predict(_request(value, rows), rows)


async def _round(batcher: Batcher, clients: int, first: float = 0) -> list[Arrays]:
    """`clients` requests at once, each reaching the model a turn after the one before."""
    return await asyncio.gather(*(_arriving(batcher, first + i, 2 * i) for i in range(clients)))


async def _clients(batcher: Batcher, clients: int, each: int) -> None:
    """`clients` clients, each sending `each` requests one after another (as a gRPC client's
    streams do); every answer must be its own request's."""

    async def client(number: int) -> None:
        for _ in range(number):
            await asyncio.sleep(0)  # a different first turn for each client
        for sent in range(each):
            value = 1000 * number + sent
            answer = await _arriving(batcher, value, 2)
            assert answer["y"].tolist() == [float(value)]

    await asyncio.gather(*(client(number) for number in range(clients)))


def _run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_a_lone_request_is_answered_at_once_without_waiting_a_turn() -> None:
    model = Model()

    async def scenario() -> None:
        batcher = _fast(model)
        batcher.start()
        answer = batcher.in_turn(_request(3), 1)
        assert isinstance(answer, dict)  # the answer itself: no future, no timer, no task
        assert answer["y"].tolist() == [3.0]
        await batcher.stop()

    _run(scenario)
    assert model.calls == [1]


def test_concurrent_clients_share_one_call_once_their_number_is_learnt() -> None:
    model = Model()

    async def scenario() -> None:
        batcher = _fast(model)
        batcher.start()
        await _clients(batcher, 8, 60)
        await batcher.stop()

    _run(scenario)
    assert sum(model.calls) == 8 * 60
    shared = sum(rows for rows in model.calls if rows == 8)
    assert shared >= 0.8 * 8 * 60, model.calls  # the clients' first and last turns differ


def test_a_batch_stops_at_max_batch_size_rows_and_the_rest_start_the_next() -> None:
    model = Model()

    async def scenario() -> list[Arrays]:
        batcher = _fast(model, max_batch_size=6)
        batcher.start()
        await _clients(batcher, 8, 30)
        answers = await asyncio.gather(*(_arriving(batcher, i, 2 * i, rows=2) for i in range(5)))
        await batcher.stop()
        return answers

    answers = _run(scenario)
    assert max(model.calls) <= 6
    assert [a["y"].tolist() for a in answers] == [[float(i)] * 2 for i in range(5)]


def test_a_request_waits_at_most_max_wait_ms_when_fewer_clients_come() -> None:
    model = Model()

    async def scenario() -> tuple[float, object]:
        batcher = _fast(model, max_wait_ms=50)
        batcher.start()
        await _clients(batcher, 4, 40)  # four clients, learnt
        batcher._expect = 4  # whatever their last turns were
        started = time.perf_counter()
        await batcher.predict(_request(1), 1)  # now one: it waits for the three that left
        waited = time.perf_counter() - started
        second = batcher.in_turn(_request(2), 1)  # learnt: answered at once
        await batcher.stop()
        return waited, second

    waited, second = _run(scenario)
    assert 0.04 <= waited < 5  # max_wait_ms, not the 30 s the scenario may take
    assert isinstance(second, dict)
    assert model.calls[-2:] == [1, 1]


def test_more_clients_are_found_by_a_later_batch() -> None:
    model = Model()

    async def scenario() -> None:
        batcher = _fast(model, max_wait_ms=5)
        batcher.start()
        await _clients(batcher, 2, 60)
        await _clients(batcher, 8, 60)
        await batcher.stop()

    _run(scenario)
    eights = model.calls[-60:].count(8)  # of the last calls, when eight clients were sending
    assert eights >= 30, model.calls


def test_a_client_that_leaves_does_not_take_the_others_answers_with_it() -> None:
    model = Model()

    async def scenario() -> list[Any]:
        batcher = _fast(model)
        batcher.start()
        await _clients(batcher, 4, 40)
        batcher._expect = 4  # four clients learnt, whatever their last turns were
        tasks = [asyncio.create_task(_arriving(batcher, i, 2 * i)) for i in range(4)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert batcher._gathering is not None  # the opener is gathering
        tasks[0].cancel()  # the batch's opener: its client went away while it gathered
        for _ in range(3):
            await asyncio.sleep(0)
        tasks[2].cancel()  # one that joined
        answers = await asyncio.gather(*tasks, return_exceptions=True)
        await batcher.stop()
        return answers

    answers = _run(scenario)
    assert isinstance(answers[0], asyncio.CancelledError)
    assert isinstance(answers[2], asyncio.CancelledError)
    assert answers[1]["y"].tolist() == [1.0]
    assert answers[3]["y"].tolist() == [3.0]


def test_a_model_error_fails_the_batch_it_was_called_for_and_no_other() -> None:
    model = Model()

    async def scenario() -> tuple[list[Any], list[Arrays]]:
        batcher = _fast(model)
        batcher.start()
        await _clients(batcher, 4, 40)
        batcher._expect = 4  # four clients learnt, whatever their last turns were
        failed = await asyncio.gather(
            *(_arriving(batcher, -1 if i == 2 else i, 2 * i) for i in range(4)), return_exceptions=True
        )
        after = await _round(batcher, 4)
        await batcher.stop()
        return failed, after

    failed, after = _run(scenario)
    assert all(isinstance(answer, ModelError) for answer in failed)  # one batch, one failure
    assert [a["y"].tolist() for a in after] == [[float(i)] for i in range(4)]


def test_batching_off_or_without_a_batch_axis_calls_each_request_alone() -> None:
    assert batch_limit([(-1, 4)], 32) == (32, True)
    assert batch_limit([(-1, -1), (-1,)], 32) == (32, False)
    assert batch_limit([(1, 4)], 32)[0] == 1  # a fixed first dimension: no batch axis
    assert batch_limit([()], 32)[0] == 1  # a scalar input
    for max_batch_size, max_wait_ms in ((1, 20), (32, 0)):
        model = Model()

        async def scenario(size: int = max_batch_size, wait: float = max_wait_ms, m: Model = model) -> None:
            batcher = _fast(m, max_batch_size=size, max_wait_ms=wait)
            batcher.start()
            await _clients(batcher, 4, 40)
            await batcher.stop()

        _run(scenario)
        assert set(model.calls) == {1}


def test_a_batch_that_ran_out_of_time_does_not_make_probing_frequent_again() -> None:
    """A probe (a batch waiting the whole max_wait_ms for more clients) delays everyone in
    it: after a batch ran short (a client late), finding the same clients again is no
    reason to probe every 16 batches, as for a client that is new."""
    model = Model()

    async def scenario() -> tuple[int, int, int]:
        batcher = _fast(model, max_wait_ms=5)
        batcher.start()
        await _clients(batcher, 8, 60)
        batcher._expect = 8  # eight clients learnt, whatever their last turns were
        spaced = batcher._probe_every
        await _round(batcher, 5)  # three clients late: the batch waits out its time with five
        lowered = batcher._expect
        batcher._until_probe = 1  # the next batch probes
        await _round(batcher, 8)  # the same eight clients again
        await batcher.stop()
        return spaced, lowered, batcher._probe_every

    spaced, lowered, after = _run(scenario)
    assert lowered == 5
    assert after == min(2 * spaced, 1024), (spaced, after)  # spaced further apart, not reset to 16
