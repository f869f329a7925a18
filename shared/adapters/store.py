"""All run and job state, in one DynamoDB table.

Layout (pk, sk):
- RUN#{run_id}, RUN            the run; gsi1 (RUNS, {created_at}#{run_id}) lists runs by time
- RUN#{run_id}, JOB#{job_key}  each job of the run
- SOURCE#{source_key}, SOURCE  which run an input started: the same S3 object or request id
                                 never starts a second run
- SLOT#{model_id}, SLOT        the model's concurrency semaphore: a string set of holders
Every item carries `version`; every change is a write conditioned on the version (and status)
the writer read, so a stale or duplicate message loses with ConflictError instead of clobbering.
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from shared.adapters.aws import translate
from shared.domain.runs import Job, Run, check_job_move, check_run_move, now
from shared.errors import ConflictError

RUNS_INDEX = "gsi1"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


class RunStore:
    """Runs, jobs, source de-duplication and per-model slots."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    # --- runs ------------------------------------------------------------------------------------
    async def create_run(self, run: Run) -> str:
        """Record a new run; if its source already started one, the existing run's id instead."""
        try:
            await self._db.transact_write_items(TransactItems=[
                {"Put": {"TableName": self._table, "Item": {
                    "pk": _s(f"SOURCE#{run.source_key}"), "sk": _s("SOURCE"), "run_id": _s(run.run_id)},
                    "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Put": {"TableName": self._table, "Item": self._run_item(run),
                         "ConditionExpression": "attribute_not_exists(pk)"}},
            ])
            return run.run_id
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise translate(exc, "recording the run") from exc
        existing = await self._db.get_item(TableName=self._table, Key=self._key(f"SOURCE#{run.source_key}", "SOURCE"),
                                           ConsistentRead=True)
        return existing["Item"]["run_id"]["S"]

    async def get_run(self, run_id: str) -> Run | None:
        item = await self._get(f"RUN#{run_id}", "RUN")
        return Run.model_validate_json(item["doc"]["S"]) if item else None

    async def move_run(self, run: Run, status: str, **changes: Any) -> Run:
        """The run moved to `status` with `changes`, written only if nobody changed it since it was read."""
        check_run_move(run.status, status)
        return await self.update_run(run, status=status, **changes)

    async def update_run(self, run: Run, **changes: Any) -> Run:
        """The run with `changes`, conditioned on its version."""
        updated = run.model_copy(update={**changes, "version": run.version + 1, "updated_at": now()})
        await self._put_if_version(self._run_item(updated), run.version, f"updating run {run.run_id}")
        return updated

    async def list_runs(self, limit: int = 20) -> list[Run]:
        """The most recent runs first."""
        response = await self._db.query(
            TableName=self._table, IndexName=RUNS_INDEX, KeyConditionExpression="gsi1pk = :runs",
            ExpressionAttributeValues={":runs": _s("RUNS")}, ScanIndexForward=False, Limit=limit,
        )
        return [Run.model_validate_json(item["doc"]["S"]) for item in response["Items"]]

    # --- jobs ------------------------------------------------------------------------------------
    async def put_new_jobs(self, jobs: list[Job]) -> None:
        """Record jobs that do not exist yet; one already recorded (a redelivery) is left as it is."""
        for job in jobs:
            try:
                await self._db.put_item(TableName=self._table, Item=self._job_item(job),
                                        ConditionExpression="attribute_not_exists(pk)")
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise translate(exc, f"recording job {job.job_key}") from exc

    async def get_job(self, run_id: str, key: str) -> Job | None:
        item = await self._get(f"RUN#{run_id}", f"JOB#{key}")
        return Job.model_validate_json(item["doc"]["S"]) if item else None

    async def list_jobs(self, run_id: str) -> list[Job]:
        jobs: list[Job] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :job)",
            "ExpressionAttributeValues": {":pk": _s(f"RUN#{run_id}"), ":job": _s("JOB#")},
        }
        while True:
            response = await self._db.query(**kwargs)
            jobs.extend(Job.model_validate_json(item["doc"]["S"]) for item in response["Items"])
            if "LastEvaluatedKey" not in response:
                return jobs
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def move_job(self, job: Job, status: str, **changes: Any) -> Job:
        check_job_move(job.status, status)
        return await self.update_job(job, status=status, **changes)

    async def update_job(self, job: Job, **changes: Any) -> Job:
        updated = job.model_copy(update={**changes, "version": job.version + 1, "updated_at": now()})
        await self._put_if_version(self._job_item(updated), job.version, f"updating job {job.job_key} of {job.run_id}")
        return updated

    # --- per-model slots ---------------------------------------------------------------------------
    async def acquire_slot(self, model_id: str, holder: str, limit: int) -> bool:
        """Take one of the model's slots for `holder`; True if held (already holding counts)."""
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(f"SLOT#{model_id}", "SLOT"),
                UpdateExpression="ADD holders :h",
                ConditionExpression="attribute_not_exists(holders) OR contains(holders, :holder) OR size(holders) < :limit",
                ExpressionAttributeValues={":h": {"SS": [holder]}, ":holder": _s(holder), ":limit": _n(limit)},
            )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, f"taking a slot of {model_id}") from exc

    async def release_slot(self, model_id: str, holder: str) -> None:
        """Give the slot back; releasing a slot not held is a no-op, so redelivery is safe."""
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(f"SLOT#{model_id}", "SLOT"),
                UpdateExpression="DELETE holders :h", ExpressionAttributeValues={":h": {"SS": [holder]}},
            )
        except ClientError as exc:
            raise translate(exc, f"releasing a slot of {model_id}") from exc

    async def slot_holders(self, model_id: str) -> set[str]:
        item = await self._get(f"SLOT#{model_id}", "SLOT")
        return set(item.get("holders", {}).get("SS", [])) if item else set()

    # --- items -------------------------------------------------------------------------------------
    def _run_item(self, run: Run) -> dict[str, Any]:
        return {
            **self._key(f"RUN#{run.run_id}", "RUN"),
            "gsi1pk": _s("RUNS"), "gsi1sk": _s(f"{run.created_at.isoformat()}#{run.run_id}"),
            "status": _s(run.status), "version": _n(run.version), "kind": _s(run.kind),
            "doc": _s(run.model_dump_json()),
        }

    def _job_item(self, job: Job) -> dict[str, Any]:
        return {
            **self._key(f"RUN#{job.run_id}", f"JOB#{job.job_key}"),
            "status": _s(job.status), "version": _n(job.version), "doc": _s(job.model_dump_json()),
        }

    @staticmethod
    def _key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": _s(pk), "sk": _s(sk)}

    async def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        try:
            response = await self._db.get_item(TableName=self._table, Key=self._key(pk, sk), ConsistentRead=True)
        except ClientError as exc:
            raise translate(exc, f"reading {pk}") from exc
        return response.get("Item")

    async def _put_if_version(self, item: dict[str, Any], version: int, doing: str) -> None:
        try:
            await self._db.put_item(TableName=self._table, Item=item, ConditionExpression="version = :v",
                                    ExpressionAttributeValues={":v": _n(version)})
        except ClientError as exc:
            error = translate(exc, doing)
            if isinstance(error, ConflictError):
                raise ConflictError(f"{doing}: changed by someone else since it was read") from exc
            raise error from exc

