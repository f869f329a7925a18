"""One delivery at a time does a run's heavy work: a lease on the run for staging and for collecting.

S3 sends the same object event twice, several jobs ending together each send a CollectRun, the
watchdog re-drives: without a lease each delivery would stage the whole input (or assemble every
result) at the same time, and all but one would lose only at their final write, after the work.
With it, the delivery that takes the lease works and renews it while it does; any other waits,
polling the lease, and takes it when the holder gives it back (then it re-reads the run and
usually finds the work done: the handler's own checks make it a no-op). A holder that died stops
renewing, so its lease expires after `seconds` and a waiter, or the redelivery of the dead
holder's own message, takes it over. Waiting costs a consumer slot and a read every `poll_s`,
never a second read of the input.

A holder that cannot renew in time (stalled longer than `seconds`) may be taken over while it
still works: that is logged, and the run's versioned writes still let only one outcome win.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import AsyncIterator, Awaitable, Callable, Protocol

import structlog

from shared.errors import QuarryError

log = structlog.get_logger("quarry.run_lease")


class LeaseStore(Protocol):
    async def take_run_lease(self, run_id: str, work: str, holder: str, seconds: float) -> bool: ...

    async def release_run_lease(self, run_id: str, work: str, holder: str) -> None: ...


def holder_name() -> str:
    """Who holds a lease: this host and process, and one attempt of it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def run_lease(store: LeaseStore, run_id: str, work: str, *, seconds: float, poll_s: float,
                    needed: Callable[[], Awaitable[bool]] | None = None,
                    holder: str | None = None) -> AsyncIterator[str | None]:
    """Wait for the run's `work` lease, hold it (renewed every third of `seconds`) while the block
    runs, and give it back after; yields the holder's name. While it waits, `needed` is asked
    after each refusal: once it says the work is no longer needed (the holder finished it), the
    wait ends and None is yielded, with no lease held."""
    holder = holder or holder_name()
    waited = 0.0
    while not await store.take_run_lease(run_id, work, holder, seconds):
        if needed is not None and not await needed():
            log.info("run_lease_wait_ended", work=work, reason="done by the holder", waited_s=round(waited, 1))
            yield None
            return
        if waited == 0:
            log.info("run_lease_busy", work=work, waiting=True)
        await asyncio.sleep(poll_s)
        waited += poll_s
    if waited:
        log.info("run_lease_taken_after_wait", work=work, waited_s=round(waited, 1))
    renewing = asyncio.create_task(_renew(store, run_id, work, holder, seconds))
    try:
        yield holder
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        try:
            await store.release_run_lease(run_id, work, holder)
        except QuarryError as exc:  # it expires on its own; a waiter then takes it
            log.warning("run_lease_not_released", work=work, reason=str(exc))


async def _renew(store: LeaseStore, run_id: str, work: str, holder: str, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds / 3)
        try:
            if not await store.take_run_lease(run_id, work, holder, seconds):
                log.warning("run_lease_lost", work=work)  # taken over after we missed renewals
                return
        except QuarryError as exc:  # a failed renewal is retried at the next one
            log.warning("run_lease_not_renewed", work=work, reason=str(exc))
