"""Wiring: settings -> logging -> adapters -> the consume loop. Every worker's main.py calls this."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import structlog
from pydantic import TypeAdapter

from shared.adapters.aws import async_clients, sync_client
from shared.adapters.bedrock import BatchJobs, Runtime
from shared.adapters.customization import Customizations
from shared.adapters.notifications import Notifier, topic_arn
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.consumer import Consumer
from shared.logs import configure_logging
from shared.settings import Settings
from shared.watchdog import watch

WORKERS = ("preprocess", "submit", "poll", "postprocess", "notify")


@dataclass
class Ports:
    """Every adapter a handler may be given."""

    settings: Settings
    store: RunStore
    queues: Queues
    batch_jobs: BatchJobs
    runtime: Runtime
    notifier: Notifier
    objects: SyncObjects
    sqs: Any
    cache: ResponseCache
    registry: Registry
    customizations: Customizations


@contextlib.asynccontextmanager
async def open_ports(settings: Settings) -> AsyncIterator[Ports]:
    services = ("s3", "sqs", "dynamodb", "events", "sns", "bedrock", "bedrock-runtime")
    async with async_clients(settings, *services) as aws:
        s3 = sync_client(settings, "s3")
        yield Ports(
            settings=settings,
            store=RunStore(aws["dynamodb"], settings.table),
            queues=Queues(aws["sqs"], settings),
            batch_jobs=BatchJobs(aws["bedrock"], role_arn=settings.bedrock_role_arn, timeout_hours=settings.job_timeout_hours),
            runtime=Runtime(aws["bedrock-runtime"]),
            notifier=Notifier(aws["sns"], aws["events"], bus=settings.bus,
                              topic_arn=settings.topic_arn or await topic_arn(aws["sns"], settings.topic_name)),
            objects=SyncObjects(s3),
            sqs=aws["sqs"],
            cache=ResponseCache(s3, settings.results_bucket),
            registry=Registry(aws["dynamodb"], settings.table),
            customizations=Customizations(aws["bedrock"], role_arn=settings.bedrock_role_arn),
        )


def by_type(handlers: dict[type, Callable[[Any], Awaitable[None]]]) -> Callable[[Any], Awaitable[None]]:
    """One handler per message type."""
    async def dispatch(message: Any) -> None:
        await handlers[type(message)](message)

    return dispatch


def run_worker(worker: str, inbox: TypeAdapter, wire: Callable[[Ports], Callable[[Any], Awaitable[None]]]) -> None:
    """Run one worker until SIGTERM: consume its queue, hand each message to its handler, and run
    the watchdog beside it (shared/watchdog.py)."""
    settings = Settings()
    configure_logging(settings.log_level)
    structlog.contextvars.bind_contextvars(worker=worker)
    asyncio.run(_serve(worker, inbox, wire, settings))


async def _serve(worker: str, inbox: TypeAdapter, wire: Callable[[Ports], Any], settings: Settings) -> None:
    async with open_ports(settings) as ports:
        async def record_failure(run_id: str, reason: str, fatal: bool) -> None:
            await ports.store.record_failure(run_id, f"{worker}: {reason}", fatal=fatal)

        consumer = Consumer(
            ports.sqs, queue_url=await ports.queues.url(worker), dlq_url=await ports.queues.url(f"{worker}-dlq"),
            inbox=inbox, handle=wire(ports), concurrency=settings.worker_concurrency,
            visibility_timeout_s=settings.visibility_timeout_s, wait_s=2, on_failure=record_failure,
        )
        consumer.install_signal_handlers()
        # Every worker runs the watchdog (one at a time, by lease), so it lives while any worker does.
        watchdog = asyncio.create_task(watch(customizations=ports.customizations, store=ports.store,
                                             queues=ports.queues, bedrock=ports.batch_jobs,
                                             settings=settings, worker=worker))
        try:
            await consumer.run()
        finally:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
