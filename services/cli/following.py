"""Following a run from the CLI: one line of its status, printed again each time it changes,
until the run ends."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from rich.console import Console
from rich.markup import escape

from shared.adapters.aws import async_clients
from shared.adapters.store import RunStore
from shared.domain.runs import Run
from shared.settings import Settings

# The run's status line, from the run just read (and whatever else the store holds for it).
StatusLine = Callable[[RunStore, Run], Awaitable[str]]


async def follow_run(run_id: str, settings: Settings, console: Console, status_line: StatusLine) -> Run:
    """The run once it has ended, having printed its status line each time the line changed."""
    async with async_clients(settings, "dynamodb") as aws:
        return await print_changes(RunStore(aws["dynamodb"], settings.table), run_id, console, status_line)


async def print_changes(store: RunStore, run_id: str, console: Console, status_line: StatusLine,
                        *, every_s: float = 1) -> Run:
    """Read the run every `every_s` seconds; print its status line when it changes; return it once ended."""
    shown = ""
    while True:
        run = await store.get_run(run_id)
        if run is not None:
            line = await status_line(store, run)
            if line != shown:
                console.print(escape(line), highlight=False)
                shown = line
            if run.terminal:
                return run
        await asyncio.sleep(every_s)
