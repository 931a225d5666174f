"""Adaptive batching: concurrent requests share one predict call, a lone request waits for none.

A model slower than a thread hop runs on the worker threads: while it works on one batch,
new requests queue up, and the next batch takes all of them (up to max_batch_size). A faster
model runs on the event loop (in_turn): gRPC hands it requests one at a time, and a batch
waits, for at most max_wait_ms, for as many requests as the last batch had. Each call of a
small model costs far more than its arithmetic (numpy's dispatch, and the caches it evicts
from under gRPC's own work), so sharing one call is most of what a busy server saves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tensors import TensorSpec, conform_output

Arrays = dict[str, np.ndarray]
_INLINE_BELOW_S = 0.0005
# batches between two that wait for as many requests as come: from the first,
# doubled after each that waited in vain, up to the last
_PROBE_FIRST, _PROBE_LAST = 16, 1024


class ModelError(Exception):
    """The model raised or answered wrongly; the request gets INTERNAL with this message."""


def batch_limit(shapes: list[tuple[int, ...]], max_batch_size: int) -> tuple[int, bool]:
    """The most rows a batch may join, and whether every request's inputs stack (no free
    dimension past the batch axis). Requests are joined along a batch axis only: where an
    input's first dimension is fixed, there is none, and each request is called alone."""
    joinable = all(shape and shape[0] == -1 for shape in shapes)
    return (max(1, max_batch_size) if joinable else 1), all(-1 not in shape[1:] for shape in shapes)


class _Gathering:
    """A batch of a fast model being gathered on the event loop: the opener's request and
    the futures of those that joined it."""

    def __init__(
        self,
        inputs: Arrays,
        rows: int,
        *,
        limit: int,
        uniform: bool,
        target: int,
        probing: bool,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
    ) -> None:
        self.items: list[tuple[Arrays, int]] = [(inputs, rows)]
        self.futures: list[asyncio.Future[Arrays]] = []
        self.rows = rows
        self._limit = limit
        self._signature = None if uniform else _signature(inputs)
        self.own: Arrays = {}
        self.target = target  # requests it waits for
        self.probing = probing  # waiting for as many as come, to find more clients
        self.closing: asyncio.Future[None] = loop.create_future()  # set when it may run
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None

    def fits(self, inputs: Arrays, rows: int) -> bool:
        if self.rows + rows > self._limit:
            return False
        return self._signature is None or _signature(inputs) == self._signature

    def add(self, inputs: Arrays, rows: int, future: asyncio.Future[Arrays]) -> None:
        self.items.append((inputs, rows))
        self.futures.append(future)
        self.rows += rows

    def close(self, run: Callable[[list[tuple[Arrays, int]]], list[Arrays]]) -> None:
        """One predict for all; the opener's answer kept (or its error raised), the others'
        futures given theirs. A request whose client left has a cancelled future: skipped."""
        try:
            results = run(self.items)
        except ModelError as exc:
            for future in self.futures:
                if not future.done():
                    future.set_exception(ModelError(str(exc)))
            raise
        self.own = results[0]
        for future, result in zip(self.futures, results[1:], strict=True):
            if not future.done():
                future.set_result(result)


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
        uniform: bool = False,
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
        self.fast = False  # whether the model answers faster than a thread hop: on the loop
        self._gathering: _Gathering | None = None
        self._expect = 1  # requests a batch waits for: how many the last batches had
        self._peak = 1  # the most requests one batch has found: the most clients seen at once
        self._probe_every = self._until_probe = _PROBE_FIRST
        # inputs whose declared shapes fix every dimension past the batch always stack
        self._uniform = uniform

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._executor

    def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # Not wait=True: a model call still running must not hold the exit past drain_s.
        self._executor.shutdown(wait=False, cancel_futures=True)

    def in_turn(self, inputs: Arrays, rows: int) -> Arrays | Awaitable[Arrays]:
        """A fast model's answer, computed on the event loop, shared with the requests that
        arrive while it gathers.

        gRPC hands requests to the loop one at a time, so concurrent requests never arrive
        together: a batch waits for as many requests as the last one had (the clients'
        concurrency), for at most max_wait_ms, and one predict call answers all. Where the
        last batch had one request, a request runs at once. Now and then a batch waits the
        whole max_wait_ms for as many as come, to find out whether more clients came; less
        often each time no more did.
        """
        gathering = self._gathering
        if gathering is not None and gathering.fits(inputs, rows):
            future: asyncio.Future[Arrays] = self._event_loop.create_future()
            gathering.add(inputs, rows, future)
            if gathering.rows >= self._max_batch:
                self._close(gathering)
            elif len(gathering.items) == gathering.target:
                # all it waited for are in; those the loop is still receiving join too
                self._event_loop.call_soon(self._close_when_idle, gathering)
            return future
        target = self._target()
        if target <= 1 or rows >= self._max_batch:
            return self._run([(inputs, rows)])[0]  # the answer itself: nothing to await
        return self._gather(inputs, rows, target)

    async def _gather(self, inputs: Arrays, rows: int, target: int) -> Arrays:
        """Open a batch for `target` requests and answer them all when it closes."""
        loop = self._event_loop
        gathering = self._gathering = _Gathering(
            inputs,
            rows,
            limit=self._max_batch,
            uniform=self._uniform,
            target=target,
            probing=target > self._expect,
            loop=loop,
            deadline=loop.time() + self._max_wait,
        )
        gathering.timer = loop.call_at(gathering.deadline, self._close, gathering)
        try:
            await gathering.closing
        finally:
            # Until now, requests that came after it closed joined too: one that came just
            # late would otherwise lead a batch of its own, a round behind the others.
            if self._gathering is gathering:
                self._gathering = None
            gathering.timer.cancel()
            if gathering.closing.done():
                self._learn(gathering)
            else:
                gathering.closing.cancel()  # its opener was cancelled: nothing waits to close it
            gathering.close(self._run)  # the opener cancelled too: the others get their answers
        return gathering.own

    def _target(self) -> int:
        """How many requests the next batch waits for."""
        if self._max_wait <= 0 or self._max_batch <= 1:
            return 1
        self._until_probe -= 1
        if self._until_probe > 0:
            return self._expect
        self._until_probe = self._probe_every
        return self._max_batch

    def _close(self, gathering: _Gathering) -> None:
        """The batch has its target or max_batch_size rows, or its time is up: its opener
        runs it at its next turn."""
        if not gathering.closing.done():
            if gathering.timer is not None:
                gathering.timer.cancel()
            gathering.closing.set_result(None)

    def _close_when_idle(self, gathering: _Gathering) -> None:
        """Close the batch once the loop has nothing else ready to run (no request it is
        still receiving could join), its rows are full or its time is up."""
        if gathering.closing.done():
            return
        loop = self._event_loop
        if getattr(loop, "_ready", None) and loop.time() < gathering.deadline:
            loop.call_soon(self._close_when_idle, gathering)
        else:
            self._close(gathering)

    def _learn(self, gathering: _Gathering) -> None:
        """What the batch gathered is what the next ones wait for: more than before when
        more came (the clients' number), fewer only when its time ran out waiting."""
        found = len(gathering.items)
        if gathering.probing:
            # more clients than ever: probe again soon; no more: wait twice as long to ask.
            # Not against what the last batches had: one that ran out of time lowers that,
            # and the probe after it would find "more" and probe every 16 batches again.
            more = found > self._peak
            self._probe_every = _PROBE_FIRST if more else min(2 * self._probe_every, _PROBE_LAST)
            self._until_probe = self._probe_every
        self._peak = max(self._peak, found)
        if found >= gathering.target:
            self._expect = max(self._expect, found)
        else:
            self._expect = max(1, found)

    async def predict(self, inputs: Arrays, rows: int) -> Arrays:
        if self.fast and self._queue.empty():
            answer = self.in_turn(inputs, rows)
            return answer if isinstance(answer, dict) else await answer
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
            self.fast = self._predict_s < _INLINE_BELOW_S
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
