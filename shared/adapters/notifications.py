"""Telling people and systems: SNS (the email users get) and events on Quarry's bus."""
from __future__ import annotations

from typing import Any

import orjson
from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.errors import RetryableError

SOURCE = "quarry"


class Notifier:
    """Publishes run summaries to the SNS topic and run events to Quarry's EventBridge bus."""

    def __init__(self, sns: Any, events: Any, *, topic_arn: str, bus: str) -> None:
        self._sns = sns
        self._events = events
        self._topic_arn = topic_arn
        self._bus = bus

    async def email(self, subject: str, body: str, *, notification_id: str | None = None) -> str:
        """Publish the email. `notification_id` is the same for every attempt at one notice: a
        subscriber that has seen it drops the copy a crash-and-retry may send."""
        attributes = ({"quarry_notification_id": {"DataType": "String", "StringValue": notification_id}}
                      if notification_id else {})
        try:
            response = await self._sns.publish(TopicArn=self._topic_arn, Subject=subject[:100], Message=body,
                                               MessageAttributes=attributes)
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
            # PutEvents answers 200 with per-entry failures (throttling, internal errors): the
            # event was not published, and publishing it again is how to get it there.
            errors = [entry.get("ErrorCode") for entry in response.get("Entries", []) if entry.get("ErrorCode")]
            raise RetryableError(f"publishing {detail_type}: EventBridge did not take it ({', '.join(errors)})")


async def topic_arn(sns: Any, name: str) -> str:
    """The ARN of the topic with this name (create_topic is idempotent and returns it)."""
    try:
        return (await sns.create_topic(Name=name))["TopicArn"]
    except ClientError as exc:
        raise translate(exc, f"finding topic {name}") from exc
