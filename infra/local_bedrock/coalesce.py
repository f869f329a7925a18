"""Concurrent InvokeModel and Converse calls answered together: one engine call per batch.

A model's engine generates one call at a time (the real engine holds a lock), so N concurrent
InvokeModel calls used to take N engine calls, each a batch of one. Here calls for the same
engine wait in one line while its current call runs, and the next call takes everything that
waited (up to `max_batch`), so a caller sending requests concurrently (Quarry's on-demand path
does, `on_demand_concurrency` at a time) gets them generated as batches. A lone call starts at
once: nothing waits for company, so a sequential caller's latency is unchanged.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
RunBatch = Callable[[Sequence[Any]], Sequence[T]]


class Coalescer(Generic[T]):
    """Calls with the same key share engine calls: `run(bodies)` answers a batch, in order."""

    def __init__(self, executor: Executor, *, max_batch: int) -> None:
        self._executor = executor
        self._max_batch = max(1, max_batch)
        self._waiting: dict[Hashable, list[tuple[Any, asyncio.Future]]] = {}
        self._drains: dict[Hashable, asyncio.Task] = {}  # held: the loop keeps only weak references

    async def call(self, key: Hashable, run: RunBatch, body: Any) -> T:
        """`run([body, ...])[i]` for this body, computed with whatever else waits under `key`.

        `run` must answer every body (a failed one with its error as its result). If `run` raises
        on a batch of several, each body is run again alone, so the error reaches only the calls
        whose own body raises it: one caller's input never fails another's."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((body, future))
        if key not in self._drains:
            self._drains[key] = asyncio.create_task(self._drain(key, run))
        return await future

    async def _drain(self, key: Hashable, run: RunBatch) -> None:
        try:
            # No await between finding the line empty and leaving `_drains`: a call that comes
            # later starts a drain of its own.
            while waiting := self._waiting.pop(key, None):
                batch, rest = waiting[: self._max_batch], waiting[self._max_batch :]
                if rest:
                    self._waiting[key] = rest
                batch = [(body, future) for body, future in batch if not future.cancelled()]
                if not batch:
                    continue
                try:
                    await self._answer(run, batch)
                except Exception:  # noqa: BLE001 - a lone call has its error; a batch is run again
                    for one in batch if len(batch) > 1 else ():
                        if not one[1].done():
                            with contextlib.suppress(Exception):  # handed to that caller by _answer
                                await self._answer(run, [one])
        finally:
            self._drains.pop(key, None)

    async def _answer(self, run: RunBatch, batch: list[tuple[Any, asyncio.Future]]) -> None:
        """Run the batch and settle its calls; an exception from `run` settles them only if the
        batch is a single call (and is raised either way)."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, run, [body for body, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} bodies got {len(results)} answers")
        except Exception as exc:
            if len(batch) == 1 and not batch[0][1].done():
                batch[0][1].set_exception(exc)
            raise
        for (_, future), result in zip(batch, results):
            if not future.done():  # a caller that went away (its request cancelled)
                future.set_result(result)
