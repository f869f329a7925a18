"""In-memory fakes of Quarry's ports, with the real adapters' method signatures.

They keep the contracts handlers rely on and nothing more: the store's version-checked writes
(a stale copy loses with ConflictError) and state-machine checks, Bedrock's answer to a repeated
clientRequestToken (the same job, never a second one), SQS's delays, S3's objects.
"""
from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO, Iterator

from shared.adapters.bedrock import BedrockJobState
from shared.adapters.objects import split_uri
from shared.domain.runs import Job, Run, check_job_move, check_run_move, now
from shared.errors import ConflictError, PermanentError
from shared.messages import Message


class FakeStore:
    """RunStore in dicts: runs, jobs, source de-duplication and per-model slots."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.jobs: dict[tuple[str, str], Job] = {}
        self.sources: dict[str, str] = {}
        self.slots: dict[str, set[str]] = {}

    # --- runs ---
    async def create_run(self, run: Run) -> str:
        if run.source_key in self.sources:
            return self.sources[run.source_key]
        self.sources[run.source_key] = run.run_id
        self.runs[run.run_id] = run.model_copy(deep=True)
        return run.run_id

    async def get_run(self, run_id: str) -> Run | None:
        run = self.runs.get(run_id)
        return run.model_copy(deep=True) if run else None

    async def move_run(self, run: Run, status: str, **changes: Any) -> Run:
        check_run_move(run.status, status)
        return await self.update_run(run, status=status, **changes)

    async def update_run(self, run: Run, **changes: Any) -> Run:
        stored = self.runs.get(run.run_id)
        if stored is None or stored.version != run.version:
            raise ConflictError(f"updating run {run.run_id}: changed by someone else since it was read")
        updated = run.model_copy(update={**changes, "version": run.version + 1, "updated_at": now()})
        self.runs[run.run_id] = updated.model_copy(deep=True)
        return updated

    async def list_runs(self, limit: int = 20) -> list[Run]:
        newest = sorted(self.runs.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [run.model_copy(deep=True) for run in newest[:limit]]

    # --- jobs ---
    async def put_new_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.jobs.setdefault((job.run_id, job.job_key), job.model_copy(deep=True))

    async def get_job(self, run_id: str, key: str) -> Job | None:
        job = self.jobs.get((run_id, key))
        return job.model_copy(deep=True) if job else None

    async def list_jobs(self, run_id: str) -> list[Job]:
        return [job.model_copy(deep=True) for (rid, _), job in sorted(self.jobs.items()) if rid == run_id]

    async def move_job(self, job: Job, status: str, **changes: Any) -> Job:
        check_job_move(job.status, status)
        return await self.update_job(job, status=status, **changes)

    async def update_job(self, job: Job, **changes: Any) -> Job:
        stored = self.jobs.get((job.run_id, job.job_key))
        if stored is None or stored.version != job.version:
            raise ConflictError(f"updating job {job.job_key} of {job.run_id}: "
                                "changed by someone else since it was read")
        updated = job.model_copy(update={**changes, "version": job.version + 1, "updated_at": now()})
        self.jobs[(job.run_id, job.job_key)] = updated.model_copy(deep=True)
        return updated

    # --- per-model slots ---
    async def acquire_slot(self, model_id: str, holder: str, limit: int) -> bool:
        holders = self.slots.setdefault(model_id, set())
        if holder in holders or len(holders) < limit:
            holders.add(holder)
            return True
        return False

    async def release_slot(self, model_id: str, holder: str) -> None:
        self.slots.get(model_id, set()).discard(holder)

    async def slot_holders(self, model_id: str) -> set[str]:
        return set(self.slots.get(model_id, set()))


class FakeQueues:
    """Records every send as (worker, message, delay_s)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message, int]] = []

    async def send(self, worker: str, message: Message, *, delay_s: int = 0) -> None:
        self.sent.append((worker, message, delay_s))

    def to(self, worker: str) -> list[Message]:
        return [message for w, message, _ in self.sent if w == worker]


def arn_for(token: str) -> str:
    """The ARN FakeBatchJobs gives the job created with this clientRequestToken."""
    job_id = hashlib.sha256(token.encode()).hexdigest()[:12]
    return f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{job_id}"


class FakeBatchJobs:
    """Bedrock's batch jobs: one job per clientRequestToken, states set by the test."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}  # arn -> the job it was created for
        self.tokens_sent: list[str] = []
        self.create_error: Exception | None = None
        self.states: dict[str, BedrockJobState] = {}
        self.stopped: list[str] = []
        self.active: dict[str, list[str]] = {}  # model_id -> active job names, Quarry's or not

    async def create(self, job: Job) -> str:
        self.tokens_sent.append(job.client_token)
        if self.create_error is not None:
            raise self.create_error
        arn = arn_for(job.client_token)
        if arn not in self.jobs:
            self.jobs[arn] = job
            self.states[arn] = BedrockJobState(arn=arn, name=job.name, status="Submitted", message=None,
                                               processed=0, succeeded=0, failed=0, total=None)
        return arn

    def set_state(self, arn: str, status: str, *, processed: int = 0, succeeded: int = 0, failed: int = 0,
                  message: str | None = None, name: str | None = None) -> None:
        known = self.states.get(arn)
        self.states[arn] = BedrockJobState(arn=arn, name=name or (known.name if known else "unknown"), status=status,
                                           message=message, processed=processed, succeeded=succeeded, failed=failed,
                                           total=None)

    async def get(self, arn: str) -> BedrockJobState:
        if arn not in self.states:
            raise PermanentError(f"reading Bedrock job {arn}: no such job")
        return self.states[arn]

    async def stop(self, arn: str) -> None:
        self.stopped.append(arn)

    async def active_job_names(self, model_id: str) -> list[str]:
        return list(self.active.get(model_id, []))


class FakeNotifier:
    """Records the emails and events it was asked to publish."""

    def __init__(self) -> None:
        self.emails: list[tuple[str, str]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def email(self, subject: str, body: str) -> str:
        self.emails.append((subject, body))
        return f"message-{len(self.emails)}"

    async def event(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.events.append((detail_type, detail))


class FakeRuntime:
    """On-demand InvokeModel that answers every call with `response`, recording each call."""

    def __init__(self, response: dict[str, Any] | None = None) -> None:
        self.response = response or {"content": [{"type": "text", "text": "ok"}],
                                      "usage": {"input_tokens": 3, "output_tokens": 1}}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def invoke(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((model_id, body))
        return self.response


class FakeObjects:
    """SyncObjects over a dict of s3:// URI -> bytes; `open_errors` are raised by the next opens."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})
        self.open_errors: list[Exception] = []

    def open(self, uri: str) -> BinaryIO:
        split_uri(uri)
        if self.open_errors:
            raise self.open_errors.pop(0)
        if uri not in self.objects:
            raise PermanentError(f"{uri} does not exist (was it deleted before the run started?)")
        return io.BytesIO(self.objects[uri])

    def size(self, uri: str) -> int | None:
        data = self.objects.get(uri)
        return None if data is None else len(data)

    def read_small(self, uri: str) -> bytes | None:
        return self.objects.get(uri)

    def upload_range(self, path: str, offset: int, length: int, uri: str) -> None:
        split_uri(uri)
        with open(path, "rb") as handle:
            handle.seek(offset)
            self.objects[uri] = handle.read(length)

    def upload_file(self, path: str, uri: str) -> None:
        with open(path, "rb") as handle:
            self.put(uri, handle.read())

    def put(self, uri: str, data: bytes) -> None:
        split_uri(uri)
        self.objects[uri] = data

    def lines(self, uri: str) -> Iterator[bytes]:
        yield from self.objects.get(uri, b"").splitlines()

    def keys(self, uri: str) -> list[str]:
        bucket, prefix = split_uri(uri)
        return sorted(key for b, key in map(split_uri, self.objects) if b == bucket and key.startswith(prefix))
