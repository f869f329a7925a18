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
        self._draining: set[Hashable] = set()

    async def call(self, key: Hashable, run: RunBatch, body: Any) -> T:
        """`run([body, ...])[i]` for this body, computed with whatever else waits under `key`.

        `run` must answer every body (a failed one with its error as its result): an exception
        from `run` itself fails every call of that batch."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((body, future))
        if key not in self._draining:
            self._draining.add(key)
            asyncio.create_task(self._drain(key, run))
        return await future

    async def _drain(self, key: Hashable, run: RunBatch) -> None:
        loop = asyncio.get_running_loop()
        try:
            # No await between finding the line empty and leaving `_draining`: a call that comes
            # later starts a drain of its own.
            while waiting := self._waiting.pop(key, None):
                batch, rest = waiting[: self._max_batch], waiting[self._max_batch :]
                if rest:
                    self._waiting[key] = rest
                batch = [(body, future) for body, future in batch if not future.cancelled()]
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, run, [body for body, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                if len(results) != len(batch):
                    error = RuntimeError(f"a batch of {len(batch)} bodies got {len(results)} answers")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results):
                    if not future.done():  # a caller that went away (its request cancelled)
                        future.set_result(result)
        finally:
            self._draining.discard(key)
