"""Sending messages to the workers' SQS queues: one message per job, never one per row."""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.messages import Message
from shared.settings import Settings

# SQS caps DelaySeconds at 15 minutes.
MAX_DELAY_S = 900


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
        try:
            await self._sqs.send_message(QueueUrl=await self.url(worker), MessageBody=message.model_dump_json(),
                                         DelaySeconds=max(0, min(delay_s, MAX_DELAY_S)))
        except ClientError as exc:
            raise translate(exc, f"sending {type(message).__name__} to {worker}") from exc

    async def attributes(self, url: str, *names: str) -> dict[str, str]:
        try:
            response = await self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))
        except ClientError as exc:
            raise translate(exc, f"reading attributes of {url}") from exc
        return response.get("Attributes", {})
