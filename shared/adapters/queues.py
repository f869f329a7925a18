"""Sending messages to the workers' SQS queues: one message per job, never one per row."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import structlog
from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.messages import Message
from shared.settings import Settings

# SQS caps DelaySeconds at 15 minutes.
MAX_DELAY_S = 900

log = structlog.get_logger("quarry.queues")


@dataclass(frozen=True)
class Outgoing:
    """A message a state change implies: written to the table's outbox in the same transaction as
    the change, sent once the transaction committed, and deleted from the outbox once sent."""

    worker: str
    message: Message
    delay_s: int = 0

    @property
    def key(self) -> str:
        """The same message (ignoring its correlation id) has the same key: written twice, it is one."""
        body = self.message.model_dump_json(exclude={"correlation_id"})
        return hashlib.sha256(f"{self.worker}|{self.delay_s}|{body}".encode()).hexdigest()[:32]


class SentLog(Protocol):
    async def forget_sent(self, run_id: str, key: str) -> None: ...


class Queues:
    """Sends a message to a worker's queue by worker name."""

    def __init__(self, sqs: Any, settings: Settings) -> None:
        self._sqs = sqs
        self._settings = settings
        self._urls: dict[str, str] = {}

    async def url(self, worker: str) -> str:
        if worker not in self._urls:
            try:
                response = await self._sqs.get_queue_url(QueueName=self._settings.queue_name(worker))
            except ClientError as exc:
                raise translate(exc, f"finding the {worker} queue") from exc
            self._urls[worker] = response["QueueUrl"]
        return self._urls[worker]

    async def send(self, worker: str, message: Message, *, delay_s: int = 0) -> None:
        await self.send_body(worker, message.model_dump_json(), delay_s=delay_s, what=type(message).__name__)

    async def send_body(self, worker: str, body: str, *, delay_s: int = 0, what: str = "a message") -> None:
        """Send a message already serialised (the outbox keeps messages as their JSON)."""
        try:
            await self._sqs.send_message(QueueUrl=await self.url(worker), MessageBody=body,
                                         DelaySeconds=max(0, min(delay_s, MAX_DELAY_S)))
        except ClientError as exc:
            raise translate(exc, f"sending {what} to {worker}") from exc

    async def attributes(self, url: str, *names: str) -> dict[str, str]:
        try:
            response = await self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))
        except ClientError as exc:
            raise translate(exc, f"reading attributes of {url}") from exc
        return response.get("Attributes", {})


async def deliver(outgoing: Sequence[Outgoing], *, queues: Queues, store: SentLog) -> None:
    """Send what a committed change implies and clear it from the outbox. A crash before the end
    leaves the rest in the outbox, where the watchdog sends it: at least once, never lost."""
    for item in outgoing:
        await queues.send(item.worker, item.message, delay_s=item.delay_s)
        await store.forget_sent(item.message.run_id, item.key)
