"""The background task each running job (batch inference or customization) lives in, and the signal
that asks it to stop: a stop wakes the job from any lifecycle delay at once instead of after it.
"""
from __future__ import annotations

import asyncio
from typing import Any, Coroutine


class JobStopped(Exception):
    """The job was asked to stop (or a fault stops it)."""


class JobTasks:
    """Each running job's asyncio task and its stop signal, by job id."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stops: dict[str, asyncio.Event] = {}

    def launch(self, job_id: str, lifecycle: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run `lifecycle` in the background, with a fresh stop signal."""
        self._stops[job_id] = asyncio.Event()
        self._tasks[job_id] = asyncio.create_task(lifecycle, name=name)

    def request_stop(self, job_id: str) -> None:
        self._stops[job_id].set()

    async def wait_for_stop(self, job_id: str) -> None:
        """Return once the job is asked to stop."""
        await self._stops[job_id].wait()

    async def pause(self, job_id: str, seconds: float) -> None:
        """Wait out a lifecycle delay; JobStopped as soon as the job is asked to stop meanwhile."""
        try:
            await asyncio.wait_for(self._stops[job_id].wait(), timeout=seconds)
        except TimeoutError:
            return
        raise JobStopped

    async def close(self) -> None:
        """Cancel every job's task and wait until they have all ended."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._stops.clear()
