"""The one SQS consume loop every worker runs.

- Messages are validated at the edge against the queue's union: a message that does not parse
  is moved to the DLQ with its id logged, and never reaches a handler.
- Handlers run concurrently up to a bound; each message is deleted only when its handler
  succeeded (partial-batch failure: the others come back after their visibility timeout, and
  after maxReceiveCount the redrive policy parks them in the DLQ).
- RetryableError shortens the wait to the error's delay (or a backoff on the receive count).
- An illegal state transition means the message is stale or a duplicate (the item moved on since
  it was sent): it is dropped with a log line, never retried to the DLQ.
- A handler that crashes is logged with the message's run and job, and the failure is recorded
  against the run (`on_failure`), so the watchdog can end a run whose messages always crash.
- On its last receive before the queue's redrive policy would park it silently, a failing message
  is parked here instead: with its reason, a log line and the failure recorded as fatal.
- Long handlers get their visibility extended while they run.
- SIGTERM/SIGINT stop receiving; in-flight handlers finish before the process exits.
"""
from __future__ import annotations

import asyncio
import json
import signal
from typing import Any, Awaitable, Callable

import structlog
from pydantic import TypeAdapter, ValidationError

from shared.domain.runs import IllegalTransition, parse_job_name
from shared.errors import ConflictError, PermanentError, RetryableError

log = structlog.get_logger("quarry.consumer")

Handler = Callable[[Any], Awaitable[None]]
# (run_id, reason, fatal): a handler failed on one of the run's messages.
FailureRecorder = Callable[[str, str, bool], Awaitable[None]]


class Consumer:
    """Receives from one queue and dispatches each message to `handle`."""

    def __init__(self, sqs: Any, *, queue_url: str, dlq_url: str | None, inbox: TypeAdapter, handle: Handler,
                 concurrency: int = 4, visibility_timeout_s: int = 120, wait_s: int = 10,
                 on_failure: FailureRecorder | None = None) -> None:
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
        self._on_failure = on_failure
        self._max_receives: int | None = None

    def stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def run(self) -> None:
        """Consume until stopped, then wait for in-flight messages."""
        self._max_receives = await self._redrive_limit()
        log.info("consumer_started", queue_url=self._queue_url, max_receives=self._max_receives)
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
        receives = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        try:
            message = self._inbox.validate_json(raw["Body"])
        except ValidationError as exc:
            with structlog.contextvars.bound_contextvars(message_id=message_id):
                await self._park(raw, f"invalid message: {describe_invalid(exc)}")
            return
        run_id, job_key = _run_and_job(message)
        context = {"message_id": message_id, "run_id": run_id, "job_key": job_key,
                   "message_type": type(message).__name__}
        with structlog.contextvars.bound_contextvars(**context):
            try:
                keeper = asyncio.create_task(self._keep_invisible(raw["ReceiptHandle"]))
                try:
                    await self._handle(message)
                finally:
                    keeper.cancel()
                await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=raw["ReceiptHandle"])
            except IllegalTransition as exc:
                # The item moved on since the message was sent: a stale or duplicate message.
                log.warning("stale_message_dropped", reason=str(exc))
                await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=raw["ReceiptHandle"])
            except ConflictError as exc:
                # Lost a race with another worker: on redelivery the handler re-reads and sees its result.
                log.info("message_conflicted", reason=str(exc))
                await self._retry_or_park(raw, run_id, receives, 1, str(exc))
            except RetryableError as exc:
                delay = exc.delay_s if exc.delay_s is not None else min(5 * 2 ** (receives - 1), 600)
                log.info("message_retry_scheduled", reason=str(exc), delay_s=delay, receives=receives)
                await self._retry_or_park(raw, run_id, receives, delay, str(exc))
            except PermanentError as exc:
                log.error("message_failed_permanently", reason=str(exc))
                await self._failed(run_id, str(exc), fatal=True)
                await self._park(raw, str(exc))
            except Exception as exc:  # noqa: BLE001 - left for redelivery, then parked
                log.exception("message_handler_crashed", receives=receives)
                reason = f"{type(exc).__name__}: {exc}"
                await self._failed(run_id, reason, fatal=False)
                if self._last_receive(receives):
                    await self._failed(run_id, reason, fatal=True)
                    await self._park(raw, f"crashed on each of {receives} receives; last: {reason}")

    def _last_receive(self, receives: int) -> bool:
        return self._max_receives is not None and receives >= self._max_receives

    async def _retry_or_park(self, raw: dict[str, Any], run_id: str | None, receives: int, delay: int,
                             reason: str) -> None:
        if self._last_receive(receives):
            await self._failed(run_id, reason, fatal=True)
            await self._park(raw, f"still failing after {receives} receives: {reason}")
        else:
            await self._retry_later(raw["ReceiptHandle"], delay)

    async def _failed(self, run_id: str | None, reason: str, *, fatal: bool) -> None:
        if self._on_failure is None or run_id is None:
            return
        try:
            await self._on_failure(run_id, reason, fatal)
        except Exception as exc:  # noqa: BLE001 - the failure is logged already; the watchdog also sees stalls
            log.warning("failure_not_recorded", error=str(exc))

    async def _redrive_limit(self) -> int | None:
        """The queue's maxReceiveCount, so the last receive can be parked here, with a reason."""
        try:
            attributes = await self._sqs.get_queue_attributes(QueueUrl=self._queue_url, AttributeNames=["RedrivePolicy"])
            return int(json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"])
        except Exception:  # noqa: BLE001 - no policy (or no permission): SQS's own redrive stays the limit
            return None

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
        log.error("message_parked", message_id=raw["MessageId"], reason=reason, dlq_url=self._dlq_url)
        if self._dlq_url:
            await self._sqs.send_message(QueueUrl=self._dlq_url, MessageBody=raw["Body"], MessageAttributes={
                "quarry_reason": {"DataType": "String", "StringValue": reason[:1000]},
                "quarry_source_message_id": {"DataType": "String", "StringValue": raw["MessageId"]},
            })
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=raw["ReceiptHandle"])


def describe_invalid(exc: ValidationError, limit: int = 3) -> str:
    """Where and how a message failed validation: locations, error types and pydantic's own
    messages, never the input values (a spec's template or system prompt would be one). A custom
    validator's message may quote its input, so only its type is kept."""
    parts = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False)[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "message"
        said = "refused by a validator" if error["type"] in ("value_error", "assertion_error") else error["msg"]
        parts.append(f"{where}: {error['type']} ({said})")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _run_and_job(message: Any) -> tuple[str | None, str | None]:
    """The run (and job) a message is about, for its log lines: Quarry's messages name them;
    Bedrock's events name the job, whose name names the run."""
    run_id, job_key = getattr(message, "run_id", None), getattr(message, "job_key", None)
    detail = getattr(message, "detail", None)
    if run_id is None and getattr(detail, "batchJobName", None):
        parsed = parse_job_name(detail.batchJobName)
        if parsed:
            run_id, job_key = parsed
    return run_id, job_key
