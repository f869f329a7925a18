"""The one SQS consume loop every worker runs.

- Messages are validated at the edge against the queue's union: a message that does not parse
  is moved to the DLQ with its id logged, and never reaches a handler.
- Handlers run concurrently up to a bound; each message is deleted only when its handler
  succeeded (partial-batch failure: the others come back after their visibility timeout, and
  after maxReceiveCount the redrive policy parks them in the DLQ).
- RetryableError shortens the wait to the error's delay (or a backoff on the receive count).
- Long handlers get their visibility extended while they run.
- SIGTERM/SIGINT stop receiving; in-flight handlers finish before the process exits.
"""
from __future__ import annotations

import asyncio
import signal
from typing import Any, Awaitable, Callable

import structlog
from pydantic import TypeAdapter, ValidationError

from shared.errors import ConflictError, PermanentError, RetryableError

log = structlog.get_logger("quarry.consumer")

Handler = Callable[[Any], Awaitable[None]]


class Consumer:
    """Receives from one queue and dispatches each message to `handle`."""

    def __init__(self, sqs: Any, *, queue_url: str, dlq_url: str | None, inbox: TypeAdapter, handle: Handler,
                 concurrency: int = 4, visibility_timeout_s: int = 120, wait_s: int = 10) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._dlq_url = dlq_url
        self._inbox = inbox
        self._handle = handle
        self._concurrency = concurrency
        self._visibility = visibility_timeout_s
        self._wait_s = wait_s
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Consume until stopped, then wait for in-flight messages."""
        log.info("consumer_started", queue_url=self._queue_url)
        while not self._stopping.is_set():
            free = self._concurrency - len(self._in_flight)  # receive no more than we can start now
            if free <= 0:
                await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            receive = asyncio.ensure_future(self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=min(10, free), WaitTimeSeconds=self._wait_s,
                VisibilityTimeout=self._visibility, AttributeNames=["ApproximateReceiveCount"]))
            stopping = asyncio.ensure_future(self._stopping.wait())
            done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            stopping.cancel()
            try:
                messages = receive.result().get("Messages", [])
            except Exception as exc:  # noqa: BLE001 - a broken receive must not kill the worker
                log.warning("receive_failed", error=str(exc))
                await asyncio.sleep(1)
                continue
            for raw in messages:
                task = asyncio.create_task(self._process(raw))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
        if self._in_flight:
            log.info("consumer_draining", in_flight=len(self._in_flight))
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        log.info("consumer_stopped", queue_url=self._queue_url)

    async def _process(self, raw: dict[str, Any]) -> None:
        message_id = raw["MessageId"]
        bound = log.bind(message_id=message_id)
        try:
            try:
                message = self._inbox.validate_json(raw["Body"])
            except ValidationError as exc:
                await self._park(raw, f"invalid message: {exc.errors(include_url=False)[:3]}")
                return
            context = {"run_id": getattr(message, "run_id", None), "job_key": getattr(message, "job_key", None),
                       "message_type": type(message).__name__}
            with structlog.contextvars.bound_contextvars(message_id=message_id, **context):
                keeper = asyncio.create_task(self._keep_invisible(raw["ReceiptHandle"]))
                try:
                    await self._handle(message)
                finally:
                    keeper.cancel()
            await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=raw["ReceiptHandle"])
        except ConflictError as exc:
            # Lost a race with another worker: on redelivery the handler re-reads and sees its result.
            bound.info("message_conflicted", reason=str(exc))
            await self._retry_later(raw["ReceiptHandle"], 1)
        except RetryableError as exc:
            receives = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            delay = exc.delay_s if exc.delay_s is not None else min(5 * 2 ** (receives - 1), 600)
            bound.info("message_retry_scheduled", reason=str(exc), delay_s=delay, receives=receives)
            await self._retry_later(raw["ReceiptHandle"], delay)
        except PermanentError as exc:
            bound.error("message_failed_permanently", reason=str(exc))
            await self._park(raw, str(exc))
        except Exception:  # noqa: BLE001 - left for redelivery, then the DLQ by redrive policy
            bound.exception("message_handler_crashed")

    async def _keep_invisible(self, receipt: str) -> None:
        """Extend visibility while a handler runs, so a long message is not delivered twice."""
        while True:
            await asyncio.sleep(self._visibility / 2)
            try:
                await self._sqs.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=receipt,
                                                          VisibilityTimeout=self._visibility)
            except Exception as exc:  # noqa: BLE001
                log.warning("visibility_extension_failed", error=str(exc))

    async def _retry_later(self, receipt: str, delay: int) -> None:
        try:
            await self._sqs.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=receipt,
                                                      VisibilityTimeout=max(0, min(delay, 43_200)))
        except Exception as exc:  # noqa: BLE001
            log.warning("retry_delay_not_set", error=str(exc))

    async def _park(self, raw: dict[str, Any], reason: str) -> None:
        """Move a message that can never succeed to the DLQ, so it is kept but not retried."""
        log.error("message_parked", message_id=raw["MessageId"], reason=reason)
        if self._dlq_url:
            await self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=raw["Body"], MessageAttributes={
                "quarry_reason": {"DataType": "String", "StringValue": reason[:1000]},
                "quarry_source_message_id": {"DataType": "String", "StringValue": raw["MessageId"]},
            })
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=raw["ReceiptHandle"])
