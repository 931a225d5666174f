"""Adaptive batching: concurrent requests share one predict call, a lone request waits for none.

While the model works on one batch, new requests queue up; the next batch takes all of them
(up to max_batch_size). Before a batch is closed the event loop turns, for at most
max_wait_ms and only while more requests keep joining, so requests already received but not
yet decoded can join it; a lone request waits for none. A model faster than a thread hop is
called right on the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tensors import TensorSpec, conform_output

Arrays = dict[str, np.ndarray]
_INLINE_BELOW_S = 0.0005


class ModelError(Exception):
    """The model raised or answered wrongly; the request gets INTERNAL with this message."""


@dataclass
class _Pending:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays]
    signature: tuple[Any, ...] = field(default=())


def _signature(inputs: Arrays) -> tuple[Any, ...]:
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(inputs.items()))


class Batcher:
    def __init__(
        self,
        predict: Callable[[Arrays], Any],
        outputs: tuple[TensorSpec, ...],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        workers: int,
    ) -> None:
        self._predict = predict
        self._outputs = outputs
        self._max_batch = max(1, max_batch_size)
        self._max_wait = max_wait_ms / 1000
        self._workers = max(1, workers)
        self._executor = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="model")
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        # Moving average of predict's duration; it starts high, so first calls use the thread.
        self._predict_s = 1.0

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Not wait=True: a model call still running must not hold the exit past drain_s.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def answer_now(self, inputs: Arrays, rows: int) -> Arrays | None:
        """The answer computed right here when the model is fast and nothing waits to be
        batched with (no queue, no task, no timer); None when the request must queue."""
        if self._predict_s < _INLINE_BELOW_S and self._queue.empty():
            return self._run([(inputs, rows)])[0]
        return None

    async def predict(self, inputs: Arrays, rows: int) -> Arrays:
        answer = self.answer_now(inputs, rows)
        if answer is not None:
            return answer
        future: asyncio.Future[Arrays] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(inputs, rows, future, _signature(inputs)))
        return await future

    async def _next_batch(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        rows = batch[0].rows
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        while rows < self._max_batch:
            if self._queue.empty():
                if self._max_wait <= 0 or loop.time() >= deadline:
                    break
                await asyncio.sleep(0)  # handlers of requests already received decode and queue
                if self._queue.empty():
                    break  # nobody else is coming: a lone request never waits
            item = self._queue.get_nowait()
            if rows + item.rows > self._max_batch or item.signature != batch[0].signature:
                await self._queue.put(item)  # it starts the next batch
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item.future.done()]  # cancelled by the client
            if not live:
                continue
            try:
                if self._predict_s < _INLINE_BELOW_S:
                    # A fast model runs on the event loop: a thread hop costs more than it does.
                    results = self._run([(item.inputs, item.rows) for item in live])
                else:
                    work = [(item.inputs, item.rows) for item in live]
                    results = await loop.run_in_executor(self._executor, self._run, work)
            except ModelError as exc:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(ModelError(str(exc)))
                continue
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)

    def _run(self, batch: list[tuple[Arrays, int]]) -> list[Arrays]:
        """Predict on requests joined along the batch axis; each gets its own rows back."""
        if len(batch) == 1:
            joined, total = batch[0]
        else:
            joined = {name: np.concatenate([inputs[name] for inputs, _ in batch]) for name in batch[0][0]}
            total = sum(rows for _, rows in batch)
        started = time.perf_counter()
        try:
            answer = self._predict(joined)
        except Exception as exc:
            msg = f"the model raised {type(exc).__name__}: {exc}"
            raise ModelError(msg) from exc
        finally:
            self._predict_s = 0.8 * self._predict_s + 0.2 * (time.perf_counter() - started)
        if not isinstance(answer, dict):
            msg = f"the model's predict returned {type(answer).__name__}, not a dict of arrays"
            raise ModelError(msg)
        outputs: Arrays = {}
        for spec in self._outputs:
            if spec.name not in answer:
                msg = f"the model's predict returned no output '{spec.name}'"
                raise ModelError(msg)
            try:
                outputs[spec.name] = conform_output(spec, answer[spec.name], total)
            except (ValueError, TypeError) as exc:
                raise ModelError(str(exc)) from exc
        if len(batch) == 1:
            return [outputs]
        results = []
        start = 0
        for _, rows in batch:
            results.append({name: array[start : start + rows] for name, array in outputs.items()})
            start += rows
        return results
