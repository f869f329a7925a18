"""All run and job state, in one DynamoDB table.

Layout (pk, sk):
- RUN#{run_id}, RUN            the run; gsi1 (RUNS, {created_at}#{run_id}) lists runs by time
- RUN#{run_id}, JOB#{job_key}  each job of the run
- SOURCE#{source_key}, SOURCE  which run an input started: the same S3 object or request id
                                 never starts a second run
- SLOT#{model_id}, SLOT        the model's concurrency semaphore: a string set of holders, and
                                 `absent`: holders Bedrock did not list as active, since when
- RUN#{run_id}, OUTBOX#{key}   a message a committed change implies, not sent yet; gsi1
                                 (OUTBOX, {written_at}#{key}) lets the watchdog find leftovers
- RUN#{run_id}, FAILURES       how often handlers crashed on the run's messages, the last error
- LEASE#{name}, LEASE          who runs the watchdog now, until when
The run item also carries its work leases (`{work}_holder`, `{work}_until`: who stages or
collects it now, until when, in epoch seconds), outside `doc` and `version`.
Every item carries `version`; every change is a write conditioned on the version (and status)
the writer read, so a stale or duplicate message loses with ConflictError instead of clobbering.
A change is an UpdateItem that SETs the attributes this code knows, never a whole-item Put: during
a rolling deploy an attribute a newer worker added survives an older worker's write (and fields
it added to `doc` are kept by Run and Job, shared/domain/evolving.py).
A change and the messages it implies are one transaction (the outbox): a crash between the two
can delay a message, never lose it.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Sequence

import structlog
from botocore.exceptions import ClientError
from pydantic import ValidationError

from shared.adapters.aws import translate
from shared.adapters.queues import Outgoing
from shared.domain.runs import JOB_HOLDS_SLOT, Job, Run, check_job_move, check_run_move, now
from shared.errors import ConflictError

RUNS_INDEX = "gsi1"
# DynamoDB's limit on the items of one transaction.
MAX_TRANSACTION_ITEMS = 100

log = structlog.get_logger("quarry.store")


@dataclass(frozen=True)
class Unsent:
    """An outbox item left behind: its message was committed but perhaps never sent."""

    run_id: str
    key: str
    worker: str
    body: str
    delay_s: int


@dataclass(frozen=True)
class UnreadableRun:
    """A run item whose document does not parse: reported, never allowed to hide the others."""

    run_id: str
    error: str


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

    async def move_run(self, run: Run, status: str, *, send: Sequence[Outgoing] = (), **changes: Any) -> Run:
        """The run moved to `status` with `changes`, written only if nobody changed it since it was
        read, together with the messages in `send` (deliver them once this returns)."""
        check_run_move(run.status, status)
        return await self.update_run(run, status=status, send=send, **changes)

    async def update_run(self, run: Run, *, send: Sequence[Outgoing] = (), **changes: Any) -> Run:
        """The run with `changes`, conditioned on its version, and the messages in `send`."""
        updated = run.model_copy(update={**changes, "version": run.version + 1, "updated_at": now()})
        doing = f"updating run {run.run_id}"
        await self._commit([self._update_versioned(self._run_item(updated), run.version)], send, doing)
        return updated

    async def list_runs(self, limit: int = 20, *, unreadable: list[UnreadableRun] | None = None) -> list[Run]:
        """The most recent runs first. A run item that does not parse is left out and logged (and
        added to `unreadable` if given): one corrupt item must not hide every other run."""
        response = await self._db.query(
            TableName=self._table, IndexName=RUNS_INDEX, KeyConditionExpression="gsi1pk = :runs",
            ExpressionAttributeValues={":runs": _s("RUNS")}, ScanIndexForward=False, Limit=limit,
        )
        return self._runs_of(response["Items"], unreadable)

    async def active_runs(self, since: dt.datetime) -> list[Run]:
        """Runs created after `since` that are not settled (ended and notified): the watchdog's work."""
        runs: list[Run] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table, "IndexName": RUNS_INDEX,
            "KeyConditionExpression": "gsi1pk = :runs AND gsi1sk >= :since",
            "FilterExpression": "attribute_not_exists(settled)",
            "ExpressionAttributeValues": {":runs": _s("RUNS"), ":since": _s(since.isoformat())},
        }
        while True:
            try:
                response = await self._db.query(**kwargs)
            except ClientError as exc:
                raise translate(exc, "listing active runs") from exc
            runs += self._runs_of(response["Items"], None)
            if "LastEvaluatedKey" not in response:
                return runs
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    @staticmethod
    def _runs_of(items: list[dict[str, Any]], unreadable: list[UnreadableRun] | None) -> list[Run]:
        runs = []
        for item in items:
            try:
                runs.append(Run.model_validate_json(item["doc"]["S"]))
            except (KeyError, ValidationError) as exc:
                run_id = item.get("pk", {}).get("S", "?").removeprefix("RUN#")
                log.error("run_item_unreadable", run_id=run_id, error=str(exc)[:500])
                if unreadable is not None:
                    unreadable.append(UnreadableRun(run_id, str(exc).splitlines()[0][:300]))
        return runs

    # --- jobs ------------------------------------------------------------------------------------
    async def put_new_jobs(self, jobs: list[Job], *, send: Sequence[Outgoing] = ()) -> bool:
        """Record jobs that do not exist yet; one already recorded (a redelivery) is left as it is.

        With `send`, the jobs and the messages are one transaction, written only if none of the
        jobs exists yet: False if one did (whoever recorded it sent its messages)."""
        if send:
            puts = [{"Put": {"TableName": self._table, "Item": self._job_item(job),
                             "ConditionExpression": "attribute_not_exists(pk)"}} for job in jobs]
            try:
                await self._commit(puts, send, f"recording {len(jobs)} jobs")
            except ConflictError:
                return False
            return True
        for job in jobs:
            try:
                await self._db.put_item(TableName=self._table, Item=self._job_item(job),
                                        ConditionExpression="attribute_not_exists(pk)")
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise translate(exc, f"recording job {job.job_key}") from exc
        return True

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
            try:
                response = await self._db.query(**kwargs)
            except ClientError as exc:
                raise translate(exc, f"listing the jobs of run {run_id}") from exc
            jobs.extend(Job.model_validate_json(item["doc"]["S"]) for item in response["Items"])
            if "LastEvaluatedKey" not in response:
                return jobs
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    async def move_job(self, job: Job, status: str, *, send: Sequence[Outgoing] = (), **changes: Any) -> Job:
        """The job moved to `status`; a move out of the slot-holding statuses gives the model's
        slot back in the same transaction, so a crash can never leak one."""
        check_job_move(job.status, status)
        return await self.update_job(job, status=status, send=send, **changes)

    async def update_job(self, job: Job, *, send: Sequence[Outgoing] = (), **changes: Any) -> Job:
        updated = job.model_copy(update={**changes, "version": job.version + 1, "updated_at": now()})
        writes = [self._update_versioned(self._job_item(updated), job.version)]
        if job.status in JOB_HOLDS_SLOT and updated.status not in JOB_HOLDS_SLOT:
            writes.append({"Update": {
                "TableName": self._table, "Key": self._key(f"SLOT#{job.model_id}", "SLOT"),
                "UpdateExpression": "DELETE holders :h", "ExpressionAttributeValues": {":h": {"SS": [job.name]}}}})
        await self._commit(writes, send, f"updating job {job.job_key} of {job.run_id}")
        return updated

    async def admit_job(self, job: Job, limit: int, **changes: Any) -> Job | None:
        """The job moved to SUBMITTING holding one of its model's `limit` slots, in one transaction;
        None if every slot is taken. Holding a slot and being SUBMITTING are never apart."""
        check_job_move(job.status, "SUBMITTING")
        updated = job.model_copy(update={**changes, "status": "SUBMITTING", "version": job.version + 1,
                                         "updated_at": now()})
        slot = {"Update": {
            "TableName": self._table, "Key": self._key(f"SLOT#{job.model_id}", "SLOT"),
            "UpdateExpression": "ADD holders :h",
            "ConditionExpression": "attribute_not_exists(holders) OR contains(holders, :holder) OR size(holders) < :limit",
            "ExpressionAttributeValues": {":h": {"SS": [job.name]}, ":holder": _s(job.name), ":limit": _n(limit)}}}
        try:
            await self._transact([slot, self._update_versioned(self._job_item(updated), job.version)],
                                 f"admitting job {job.job_key} of {job.run_id}")
        except _Cancelled as exc:
            if exc.failed == [0]:
                return None
            raise
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

    async def slot_state(self, model_id: str) -> tuple[set[str], dict[str, dt.datetime]]:
        """The model's slot holders, and those Bedrock was last seen not listing, since when."""
        item = await self._get(f"SLOT#{model_id}", "SLOT") or {}
        absent = {name: dt.datetime.fromisoformat(value["S"]) for name, value in item.get("absent", {}).get("M", {}).items()}
        return set(item.get("holders", {}).get("SS", [])), absent

    async def mark_absent(self, model_id: str, absent: dict[str, dt.datetime]) -> None:
        """Record which holders Bedrock does not list, since when (a heuristic: the last writer wins)."""
        key = self._key(f"SLOT#{model_id}", "SLOT")
        try:
            if absent:
                await self._db.update_item(TableName=self._table, Key=key, UpdateExpression="SET absent = :a",
                                           ExpressionAttributeValues={":a": {"M": {
                                               name: _s(since.isoformat()) for name, since in absent.items()}}})
            else:
                await self._db.update_item(TableName=self._table, Key=key, UpdateExpression="REMOVE absent")
        except ClientError as exc:
            raise translate(exc, f"recording absent jobs of {model_id}") from exc

    # --- the outbox ----------------------------------------------------------------------------------
    async def forget_sent(self, run_id: str, key: str) -> None:
        """The outbox item was sent: delete it (deleting one already gone is fine)."""
        try:
            await self._db.delete_item(TableName=self._table, Key=self._key(f"RUN#{run_id}", f"OUTBOX#{key}"))
        except ClientError as exc:
            raise translate(exc, f"clearing a sent message of {run_id}") from exc

    async def unsent(self, written_before: dt.datetime, limit: int = 200) -> list[Unsent]:
        """Outbox items written before `written_before`, oldest first: messages a crash left unsent."""
        try:
            response = await self._db.query(
                TableName=self._table, IndexName=RUNS_INDEX, Limit=limit,
                KeyConditionExpression="gsi1pk = :outbox AND gsi1sk < :before",
                ExpressionAttributeValues={":outbox": _s("OUTBOX"), ":before": _s(written_before.isoformat())})
        except ClientError as exc:
            raise translate(exc, "reading the outbox") from exc
        return [Unsent(run_id=item["pk"]["S"].removeprefix("RUN#"), key=item["sk"]["S"].removeprefix("OUTBOX#"),
                       worker=item["worker"]["S"], body=item["body"]["S"], delay_s=int(item["delay_s"]["N"]))
                for item in response["Items"]]

    # --- failures and the watchdog's lease -------------------------------------------------------------
    async def record_failure(self, run_id: str, reason: str, *, fatal: bool = False) -> None:
        """A handler crashed on (or parked) one of the run's messages: count it, keep the reason."""
        expression = "ADD crashes :one SET last_error = :reason" + (", fatal = :true" if fatal else "")
        values = {":one": _n(1), ":reason": _s(reason[:2000])} | ({":true": {"BOOL": True}} if fatal else {})
        try:
            await self._db.update_item(TableName=self._table, Key=self._key(f"RUN#{run_id}", "FAILURES"),
                                       UpdateExpression=expression, ExpressionAttributeValues=values)
        except ClientError as exc:
            raise translate(exc, f"recording a failure of run {run_id}") from exc

    async def failures(self, run_id: str) -> tuple[int, str | None, bool]:
        """(crashes, the last error, whether one was fatal) recorded for the run."""
        item = await self._get(f"RUN#{run_id}", "FAILURES")
        if item is None:
            return 0, None, False
        return (int(item.get("crashes", {}).get("N", "0")), item.get("last_error", {}).get("S"),
                item.get("fatal", {}).get("BOOL", False))

    async def take_lease(self, name: str, holder: str, seconds: int) -> bool:
        """Hold the named lease for `seconds` if it is free, expired or already ours."""
        at = now()
        try:
            await self._db.put_item(
                TableName=self._table, Item={**self._key(f"LEASE#{name}", "LEASE"), "holder": _s(holder),
                                             "until": _s((at + dt.timedelta(seconds=seconds)).isoformat())},
                ConditionExpression="attribute_not_exists(pk) OR holder = :me OR #until < :now",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={":me": _s(holder), ":now": _s(at.isoformat())})
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, f"taking the {name} lease") from exc

    # --- a run's work leases (shared/run_lease.py) ------------------------------------------------------
    async def take_run_lease(self, run_id: str, work: str, holder: str, seconds: float) -> bool:
        """Hold the run's `work` lease (staging, collecting) for `seconds` if it is free, expired or
        already `holder`'s; False if another holder has it, or the run does not exist.

        The lease is two attributes of the run item outside its `doc` and `version`, so taking or
        renewing it never makes a state change conflict, and no versioned write removes it."""
        holder_name, until_name = _lease_attributes(work)
        at = time.time()
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(f"RUN#{run_id}", "RUN"),
                UpdateExpression="SET #holder = :me, #until = :until",
                ConditionExpression="attribute_exists(pk) AND "
                                    "(attribute_not_exists(#until) OR #until < :now OR #holder = :me)",
                ExpressionAttributeNames={"#holder": holder_name, "#until": until_name},
                ExpressionAttributeValues={":me": _s(holder), ":until": {"N": f"{at + seconds:.3f}"},
                                           ":now": {"N": f"{at:.3f}"}})
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise translate(exc, f"taking the {work} lease of run {run_id}") from exc

    async def release_run_lease(self, run_id: str, work: str, holder: str) -> None:
        """Give the lease back if `holder` still has it (a lease taken over stays with its new holder)."""
        holder_name, until_name = _lease_attributes(work)
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(f"RUN#{run_id}", "RUN"),
                UpdateExpression="REMOVE #holder, #until", ConditionExpression="#holder = :me",
                ExpressionAttributeNames={"#holder": holder_name, "#until": until_name},
                ExpressionAttributeValues={":me": _s(holder)})
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise translate(exc, f"releasing the {work} lease of run {run_id}") from exc

    # --- items -------------------------------------------------------------------------------------
    def _run_item(self, run: Run) -> dict[str, Any]:
        item = {
            **self._key(f"RUN#{run.run_id}", "RUN"),
            "gsi1pk": _s("RUNS"), "gsi1sk": _s(f"{run.created_at.isoformat()}#{run.run_id}"),
            "status": _s(run.status), "version": _n(run.version), "kind": _s(run.kind),
            "doc": _s(run.model_dump_json()),
        }
        if run.settled:
            item["settled"] = {"BOOL": True}  # the watchdog's query leaves it out
        return item

    def _outbox_item(self, outgoing: Outgoing) -> dict[str, Any]:
        return {
            **self._key(f"RUN#{outgoing.message.run_id}", f"OUTBOX#{outgoing.key}"),
            "gsi1pk": _s("OUTBOX"), "gsi1sk": _s(f"{now().isoformat()}#{outgoing.key}"),
            "worker": _s(outgoing.worker), "delay_s": _n(outgoing.delay_s), "body": _s(outgoing.message.model_dump_json()),
        }

    def _update_versioned(self, item: dict[str, Any], version: int) -> dict[str, Any]:
        """SET the item's attributes if it is still at `version`; attributes not in `item` stay."""
        fields = [name for name in item if name not in ("pk", "sk")]
        return {"Update": {
            "TableName": self._table, "Key": {"pk": item["pk"], "sk": item["sk"]},
            "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(fields))),
            "ConditionExpression": "#version = :v",
            "ExpressionAttributeNames": {"#version": "version"} | {f"#f{i}": name for i, name in enumerate(fields)},
            "ExpressionAttributeValues": {":v": _n(version)} | {f":f{i}": item[name] for i, name in enumerate(fields)},
        }}

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

    async def _commit(self, writes: list[dict[str, Any]], send: Sequence[Outgoing], doing: str) -> None:
        """`writes` and the outbox items of `send`, committed together. Past one transaction's size,
        the extra outbox items are written first: a crash then sends a message early (handlers
        take that), never loses one."""
        outbox = [{"Put": {"TableName": self._table, "Item": self._outbox_item(o)}} for o in send]
        room = MAX_TRANSACTION_ITEMS - len(writes)
        early, last = outbox[:max(0, len(outbox) - room)], outbox[max(0, len(outbox) - room):]
        for start in range(0, len(early), MAX_TRANSACTION_ITEMS):
            await self._transact(early[start:start + MAX_TRANSACTION_ITEMS], doing)
        try:
            await self._transact(writes + last, doing)
        except _Cancelled as exc:
            raise ConflictError(f"{doing}: changed by someone else since it was read") from exc

    async def _transact(self, items: list[dict[str, Any]], doing: str) -> None:
        try:
            if len(items) == 1 and "Put" in items[0]:  # one item: a plain conditional write is cheaper
                await self._db.put_item(**items[0]["Put"])
            elif len(items) == 1 and "Update" in items[0]:
                await self._db.update_item(**items[0]["Update"])
            else:
                await self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                raise _Cancelled(doing, [0]) from exc
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons", [])
                failed = [i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
                if failed or not reasons:
                    raise _Cancelled(doing, failed) from exc
            raise translate(exc, doing) from exc


def _lease_attributes(work: str) -> tuple[str, str]:
    if not work.isidentifier():
        raise ValueError(f"a lease name must be an identifier, not {work!r}")
    return f"{work}_holder", f"{work}_until"


class _Cancelled(ConflictError):
    """A transaction lost on a condition; `failed` are the indexes of the items whose check failed."""

    def __init__(self, doing: str, failed: list[int]) -> None:
        super().__init__(f"{doing}: changed by someone else since it was read")
        self.failed = failed

