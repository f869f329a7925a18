"""The model registry: every evaluated model's scores, in the run table, grouped by model group.

Items (pk, sk) beside the runs':
- REGISTRY#{group}, ENTRY#{at}#{run_id}#{model}   one evaluated model of one evaluation run: its
                                                   scores with intervals, cost, the config and
                                                   dataset hashes; gsi1 (REGISTRY, {group}#{at}...)
                                                   lists every group's entries
- REGISTRY#{group}, CHAMPION                      the model the group's latest evaluation recommends:
                                                   what `champion@{group}` in a config resolves to
Entries are keyed by the run, so recording an evaluation twice (a redelivery) writes the same items.
"""
from __future__ import annotations

from typing import Any

import orjson
from botocore.exceptions import ClientError

from shared.adapters.aws import translate

INDEX = "gsi1"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


class Registry:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def record(self, group: str, entries: list[dict[str, Any]], champion: dict[str, Any] | None) -> None:
        """Write the entries of one evaluation (each with `at`, `run_id` and `name`), and make
        `champion` the group's champion unless a later evaluation already chose one."""
        try:
            for entry in entries:
                sk = f"ENTRY#{entry['at']}#{entry['run_id']}#{entry['name']}"
                await self._db.put_item(TableName=self._table, Item={
                    "pk": _s(f"REGISTRY#{group}"), "sk": _s(sk), "gsi1pk": _s("REGISTRY"),
                    "gsi1sk": _s(f"{group}#{entry['at']}#{entry['run_id']}#{entry['name']}"),
                    "doc": _s(orjson.dumps(entry).decode())})
            if champion is not None:
                try:
                    await self._db.put_item(
                        TableName=self._table,
                        Item={"pk": _s(f"REGISTRY#{group}"), "sk": _s("CHAMPION"), "at": _s(champion["at"]),
                              "doc": _s(orjson.dumps(champion).decode())},
                        ConditionExpression="attribute_not_exists(pk) OR #at <= :at",
                        ExpressionAttributeNames={"#at": "at"}, ExpressionAttributeValues={":at": _s(champion["at"])})
                except ClientError as exc:
                    if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                        raise
        except ClientError as exc:
            raise translate(exc, f"recording the evaluation in registry group {group}") from exc

    async def champion(self, group: str) -> dict[str, Any] | None:
        """The group's champion ({model_id, name, run_id, ...}), or None if it has none yet."""
        try:
            item = (await self._db.get_item(TableName=self._table, ConsistentRead=True,
                                            Key={"pk": _s(f"REGISTRY#{group}"), "sk": _s("CHAMPION")})).get("Item")
        except ClientError as exc:
            raise translate(exc, f"reading the champion of registry group {group}") from exc
        return orjson.loads(item["doc"]["S"]) if item else None

    async def entries(self, group: str) -> list[dict[str, Any]]:
        """The group's entries, oldest first."""
        items = await self._query(KeyConditionExpression="pk = :pk AND begins_with(sk, :entry)",
                                  ExpressionAttributeValues={":pk": _s(f"REGISTRY#{group}"), ":entry": _s("ENTRY#")})
        return [orjson.loads(item["doc"]["S"]) for item in items]

    async def groups(self) -> dict[str, int]:
        """Every group with its number of entries."""
        items = await self._query(IndexName=INDEX, KeyConditionExpression="gsi1pk = :registry",
                                  ExpressionAttributeValues={":registry": _s("REGISTRY")})
        counts: dict[str, int] = {}
        for item in items:
            group = item["gsi1sk"]["S"].split("#", 1)[0]
            counts[group] = counts.get(group, 0) + 1
        return counts

    async def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs["TableName"] = self._table
        try:
            while True:
                response = await self._db.query(**kwargs)
                items += response["Items"]
                if "LastEvaluatedKey" not in response:
                    return items
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        except ClientError as exc:
            raise translate(exc, "reading the model registry") from exc
