"""Telling people and systems: SNS (the email users get) and events on Quarry's bus."""
from __future__ import annotations

from typing import Any

import orjson
from botocore.exceptions import ClientError

from shared.adapters.aws import translate

SOURCE = "quarry"


class Notifier:
    """Publishes run summaries to the SNS topic and run events to Quarry's EventBridge bus."""

    def __init__(self, sns: Any, events: Any, *, topic_arn: str, bus: str) -> None:
        self._sns = sns
        self._events = events
        self._topic_arn = topic_arn
        self._bus = bus

    async def email(self, subject: str, body: str) -> str:
        try:
            response = await self._sns.publish(TopicArn=self._topic_arn, Subject=subject[:100], Message=body)
        except ClientError as exc:
            raise translate(exc, "publishing to the notification topic") from exc
        return response["MessageId"]

    async def event(self, detail_type: str, detail: dict[str, Any]) -> None:
        try:
            response = await self._events.put_events(Entries=[{
                "Source": SOURCE, "DetailType": detail_type, "Detail": orjson.dumps(detail).decode(),
                "EventBusName": self._bus,
            }])
        except ClientError as exc:
            raise translate(exc, f"publishing {detail_type}") from exc
        if response.get("FailedEntryCount"):
            raise translate(RuntimeError(f"EventBridge rejected {detail_type}: {response['Entries']}"), "publishing")


async def topic_arn(sns: Any, name: str) -> str:
    """The ARN of the topic with this name (create_topic is idempotent and returns it)."""
    try:
        return (await sns.create_topic(Name=name))["TopicArn"]
    except ClientError as exc:
        raise translate(exc, f"finding topic {name}") from exc
