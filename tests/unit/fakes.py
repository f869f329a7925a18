"""In-memory fakes of Quarry's ports, with the real adapters' method signatures.

They keep the contracts handlers rely on and nothing more: the store's version-checked writes
(a stale copy loses with ConflictError) and state-machine checks, Bedrock's answer to a repeated
clientRequestToken (the same job, never a second one), SQS's delays, S3's objects.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
from typing import Any, BinaryIO, Iterator, Sequence

from shared.adapters.bedrock import BedrockJobState
from shared.adapters.objects import split_uri
from shared.adapters.queues import Outgoing
from shared.domain.runs import JOB_HOLDS_SLOT, Job, Run, check_job_move, check_run_move, now
from shared.errors import ConflictError, PermanentError
from shared.messages import Message


class FakeStore:
    """RunStore in dicts: runs, jobs, source de-duplication, per-model slots, the outbox (messages a
    change implies, kept with it until `deliver` sends them) and recorded failures."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.jobs: dict[tuple[str, str], Job] = {}
        self.sources: dict[str, str] = {}
        self.slots: dict[str, set[str]] = {}
        self.absent: dict[str, dict[str, dt.datetime]] = {}  # model_id -> holders Bedrock did not list, since
        self.outbox: dict[tuple[str, str], tuple[Outgoing, dt.datetime]] = {}
        self.crashes: dict[str, tuple[int, str | None, bool]] = {}
        self.leases: dict[str, tuple[str, dt.datetime]] = {}

    def _keep(self, send: Sequence[Outgoing]) -> None:
        for item in send:
            self.outbox[(item.message.run_id, item.key)] = (item, now())

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

    async def move_run(self, run: Run, status: str, *, send: Sequence[Outgoing] = (), **changes: Any) -> Run:
        check_run_move(run.status, status)
        return await self.update_run(run, status=status, send=send, **changes)

    async def update_run(self, run: Run, *, send: Sequence[Outgoing] = (), **changes: Any) -> Run:
        stored = self.runs.get(run.run_id)
        if stored is None or stored.version != run.version:
            raise ConflictError(f"updating run {run.run_id}: changed by someone else since it was read")
        updated = run.model_copy(update={**changes, "version": run.version + 1, "updated_at": now()})
        self.runs[run.run_id] = updated.model_copy(deep=True)
        self._keep(send)
        return updated

    async def list_runs(self, limit: int = 20, *, unreadable: list | None = None) -> list[Run]:
        newest = sorted(self.runs.values(), key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [run.model_copy(deep=True) for run in newest[:limit]]

    async def active_runs(self, since: dt.datetime) -> list[Run]:
        return [run.model_copy(deep=True) for run in self.runs.values() if run.created_at >= since and not run.settled]

    # --- jobs ---
    async def put_new_jobs(self, jobs: list[Job], *, send: Sequence[Outgoing] = ()) -> bool:
        if send and any((job.run_id, job.job_key) in self.jobs for job in jobs):
            return False
        for job in jobs:
            self.jobs.setdefault((job.run_id, job.job_key), job.model_copy(deep=True))
        self._keep(send)
        return True

    async def get_job(self, run_id: str, key: str) -> Job | None:
        job = self.jobs.get((run_id, key))
        return job.model_copy(deep=True) if job else None

    async def list_jobs(self, run_id: str) -> list[Job]:
        return [job.model_copy(deep=True) for (rid, _), job in sorted(self.jobs.items()) if rid == run_id]

    async def move_job(self, job: Job, status: str, *, send: Sequence[Outgoing] = (), **changes: Any) -> Job:
        check_job_move(job.status, status)
        return await self.update_job(job, status=status, send=send, **changes)

    async def update_job(self, job: Job, *, send: Sequence[Outgoing] = (), **changes: Any) -> Job:
        stored = self.jobs.get((job.run_id, job.job_key))
        if stored is None or stored.version != job.version:
            raise ConflictError(f"updating job {job.job_key} of {job.run_id}: "
                                "changed by someone else since it was read")
        updated = job.model_copy(update={**changes, "version": job.version + 1, "updated_at": now()})
        self.jobs[(job.run_id, job.job_key)] = updated.model_copy(deep=True)
        if job.status in JOB_HOLDS_SLOT and updated.status not in JOB_HOLDS_SLOT:
            self.slots.get(job.model_id, set()).discard(job.name)
        self._keep(send)
        return updated

    async def admit_job(self, job: Job, limit: int, **changes: Any) -> Job | None:
        check_job_move(job.status, "SUBMITTING")
        holders = self.slots.setdefault(job.model_id, set())
        if job.name not in holders and len(holders) >= limit:
            return None
        updated = await self.update_job(job, status="SUBMITTING", **changes)
        holders.add(job.name)
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

    async def slot_state(self, model_id: str) -> tuple[set[str], dict[str, dt.datetime]]:
        return set(self.slots.get(model_id, set())), dict(self.absent.get(model_id, {}))

    async def mark_absent(self, model_id: str, absent: dict[str, dt.datetime]) -> None:
        self.absent[model_id] = dict(absent)

    # --- outbox, failures, lease ---
    async def forget_sent(self, run_id: str, key: str) -> None:
        self.outbox.pop((run_id, key), None)

    async def unsent(self, written_before: dt.datetime, limit: int = 200):
        from shared.adapters.store import Unsent

        return [Unsent(run_id=o.message.run_id, key=o.key, worker=o.worker, body=o.message.model_dump_json(),
                       delay_s=o.delay_s) for (o, at) in self.outbox.values() if at < written_before][:limit]

    def unsent_messages(self) -> list[Message]:
        """What a crash right now would leave in the outbox."""
        return [o.message for o, _ in self.outbox.values()]

    async def record_failure(self, run_id: str, reason: str, *, fatal: bool = False) -> None:
        crashes, _, was_fatal = self.crashes.get(run_id, (0, None, False))
        self.crashes[run_id] = (crashes + 1, reason, was_fatal or fatal)

    async def failures(self, run_id: str) -> tuple[int, str | None, bool]:
        return self.crashes.get(run_id, (0, None, False))

    async def take_lease(self, name: str, holder: str, seconds: int) -> bool:
        current = self.leases.get(name)
        if current and current[0] != holder and current[1] > now():
            return False
        self.leases[name] = (holder, now() + dt.timedelta(seconds=seconds))
        return True

    async def take_run_lease(self, run_id: str, work: str, holder: str, seconds: float) -> bool:
        if run_id not in self.runs:
            return False
        return await self.take_lease(f"RUN#{run_id}#{work}", holder, seconds)

    async def release_run_lease(self, run_id: str, work: str, holder: str) -> None:
        current = self.leases.get(f"RUN#{run_id}#{work}")
        if current and current[0] == holder:
            del self.leases[f"RUN#{run_id}#{work}"]


class WorkerDied(BaseException):
    """Stands for kill -9 between a committed write and the send after it (not an Exception, so
    no handler code can catch it, as none could catch a kill)."""


class FakeQueues:
    """Records every send as (worker, message, delay_s)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Message, int]] = []
        self.crash_on_send = False  # the process dies at its next send: what it committed stays

    async def send(self, worker: str, message: Message, *, delay_s: int = 0) -> None:
        if self.crash_on_send:
            raise WorkerDied(f"the worker died before sending {type(message).__name__}")
        self.sent.append((worker, message, delay_s))

    async def send_body(self, worker: str, body: str, *, delay_s: int = 0, what: str = "a message") -> None:
        from shared import messages

        inbox = {"preprocess": messages.PREPROCESS_INBOX, "submit": messages.SUBMIT_INBOX, "poll": messages.POLL_INBOX,
                 "postprocess": messages.POSTPROCESS_INBOX, "notify": messages.NOTIFY_INBOX}[worker]
        await self.send(worker, inbox.validate_json(body), delay_s=delay_s)

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
        self.list_error: Exception | None = None

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

    async def get(self, arn: str) -> BedrockJobState | None:
        return self.states.get(arn)  # None: Bedrock answered 404, it does not know the job

    def forget(self, arn: str) -> None:
        """Bedrock restarted and lost the job."""
        self.states.pop(arn, None)

    async def stop(self, arn: str) -> None:
        self.stopped.append(arn)

    async def active_job_names(self, model_id: str) -> list[str]:
        if self.list_error is not None:
            raise self.list_error
        return list(self.active.get(model_id, []))


class FakeNotifier:
    """Records the emails and events it was asked to publish."""

    def __init__(self) -> None:
        self.emails: list[tuple[str, str]] = []
        self.notification_ids: list[str | None] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_error: Exception | None = None

    async def email(self, subject: str, body: str, *, notification_id: str | None = None) -> str:
        self.emails.append((subject, body))
        self.notification_ids.append(notification_id)
        return f"message-{len(self.emails)}"

    async def event(self, detail_type: str, detail: dict[str, Any]) -> None:
        if self.event_error is not None:
            raise self.event_error
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

    def writing(self, uri: str):
        """A stream whose bytes become the object when it closes without error."""
        import contextlib

        @contextlib.contextmanager
        def stream():
            buffer = io.BytesIO()
            yield buffer
            self.put(uri, buffer.getvalue())

        return stream()

    def lines(self, uri: str) -> Iterator[bytes]:
        yield from self.objects.get(uri, b"").splitlines()

    def keys(self, uri: str) -> list[str]:
        bucket, prefix = split_uri(uri)
        return sorted(key for b, key in map(split_uri, self.objects) if b == bucket and key.startswith(prefix))
