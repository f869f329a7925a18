"""The life of a batch inference job: Submitted -> Validating -> Scheduled -> InProgress -> an end.

Each job runs as one asyncio task. It validates its input the way Bedrock does (JSONL, record
counts, file and job sizes), waits for one of a limited number of run slots, streams its records
through the engines in mini-batches, writes outputs in Bedrock's layout and order-scrambled, and
publishes an event at every status change.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import random
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import structlog

from infra.local_bedrock import s3io
from infra.local_bedrock.events import EventPublisher
from infra.local_bedrock.inference import Engines, WrongAnswers, invoke_many
from infra.local_bedrock.job_tasks import JobStopped, JobTasks
from infra.local_bedrock.jobs import Job, utcnow
from infra.local_bedrock.s3io import InputFile, JobFailure
from infra.local_bedrock.settings import Settings

log = structlog.get_logger("local_bedrock.batch")


# Injected outcomes that end a job part-way through its records.
_ENDING_FAULTS = ("Failed", "Stopped", "PartiallyCompleted")


@dataclass
class _Window:
    """Output lines held back and shuffled before writing, so output order is not input order."""

    lines: list[bytes]
    rng: random.Random

    def take(self) -> bytes:
        self.rng.shuffle(self.lines)
        data = b"".join(self.lines)
        self.lines.clear()
        return data


class BatchRunner:
    """Runs every job's lifecycle in the background."""

    def __init__(self, settings: Settings, *, engines: Engines, s3: Any, events: EventPublisher,
                 executor: Executor, on_change: Callable[[], None] = lambda: None) -> None:
        self._settings = settings
        self._on_change = on_change
        self._engines = engines
        self._s3 = s3
        self._events = events
        self._executor = executor
        self._slots = asyncio.Semaphore(settings.running_jobs)
        self._tasks = JobTasks()

    async def start(self, job: Job) -> None:
        """Announce the new job and start its lifecycle."""
        self._on_change()
        await self._events.job_changed(job)
        self._launch(job, resumed=False)

    async def resume(self, job: Job) -> None:
        """Carry on a job that had not ended when the service last stopped: its lifecycle runs
        again from Validating (outputs are rewritten whole), or a job that was Stopping ends Stopped."""
        if job.status == "Stopping":
            await self._set(job, "Stopped", "The job was stopped; the service restarted while it was stopping.")
            return
        log.info("job_resumed", job_id=job.job_id, job_name=job.job_name, status=job.status)
        job.total_records, job.processed, job.succeeded, job.failed = None, 0, 0, 0
        job.input_tokens = job.output_tokens = 0
        self._launch(job, resumed=True)

    def _launch(self, job: Job, *, resumed: bool) -> None:
        self._tasks.launch(job.job_id, self._run(job, resumed=resumed), name=f"job-{job.job_id}")

    async def stop(self, job: Job) -> None:
        """Move a running job to Stopping; its task finishes the records in flight, then Stopped."""
        job.stop_requested = True
        await self._set(job, "Stopping")
        self._tasks.request_stop(job.job_id)

    async def close(self) -> None:
        await self._tasks.close()

    async def _run(self, job: Job, *, resumed: bool = False) -> None:
        bound = log.bind(job_id=job.job_id, job_name=job.job_name, model_id=job.model.model_id)
        try:
            if not resumed:
                await self._tasks.pause(job.job_id, self._settings.delays.submitted)
            await self._set(job, "Validating")
            files = await self._validate(job)
            await self._tasks.pause(job.job_id, self._settings.delays.validating)
            await self._set(job, "Scheduled")
            await self._tasks.pause(job.job_id, self._settings.delays.scheduled)
            await self._run_when_slot_free(job, files)
        except JobStopped:
            await self._set(job, "Stopped", "The job was stopped before it started.")
        except JobFailure as failure:
            bound.info("job_failed", reason=str(failure))
            await self._set(job, "Failed", str(failure))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the service must never leave a job hanging on a bug
            bound.exception("job_crashed")
            await self._set(job, "Failed", f"Internal error while running the job: {type(exc).__name__}: {exc}")
        bound.info("job_ended", status=job.status, processed=job.processed, failed=job.failed)

    async def _run_when_slot_free(self, job: Job, files: list[InputFile]) -> None:
        if job.faults.outcome == "Expired":
            raise_expired = True
        else:
            raise_expired = False
            try:
                await asyncio.wait_for(self._slots.acquire(), timeout=self._seconds_left(job))
            except TimeoutError:
                raise_expired = True
        if raise_expired:
            await self._set(job, "Expired", f"The job was not started within its timeout of {job.timeout_hours} hours.")
            return
        try:
            if job.stop_requested:
                raise JobStopped
            await self._set(job, "InProgress")
            status, message = await self._process(job, files)
            await self._write_manifest(job)
            await self._set(job, status, message)
        finally:
            self._slots.release()

    # --- validation ------------------------------------------------------------------------------
    async def _validate(self, job: Job) -> list[InputFile]:
        limits = self._settings.limits
        files = await s3io.input_files(self._s3, job.input_uri)
        await self._check_output_bucket(job)
        for file in files:
            if file.size > limits.max_file_bytes:
                raise JobFailure(f"The input file {file.uri} is {file.size} bytes, over the limit of "
                                 f"{limits.max_file_bytes} bytes per file. Split it into smaller files.")
        total_bytes = sum(file.size for file in files)
        if total_bytes > limits.max_job_bytes:
            raise JobFailure(f"The job's input is {total_bytes} bytes in all, over the limit of "
                             f"{limits.max_job_bytes} bytes per job. Split it across jobs.")
        total = 0
        for file in files:
            count = await self._count_records(file)
            if count > limits.max_records_per_file:
                raise JobFailure(f"The input file {file.uri} has {count} records, over the limit of "
                                 f"{limits.max_records_per_file} records per file.")
            total += count
        if total < limits.min_records_per_job:
            raise JobFailure(f"The job has {total} records, fewer than the minimum of {limits.min_records_per_job} "
                             "records per batch inference job. Add records, or call InvokeModel instead.")
        if total > limits.max_records_per_job:
            raise JobFailure(f"The job has {total} records, more than the maximum of {limits.max_records_per_job} "
                             "records per batch inference job. Split the input across jobs.")
        job.total_records = total
        return files

    async def _count_records(self, file: InputFile) -> int:
        count = 0
        async for number, line in s3io.lines(self._s3, file):
            _record(line, number, file)
            count += 1
        return count

    async def _check_output_bucket(self, job: Job) -> None:
        bucket, _ = s3io.split_uri(job.output_uri)
        try:
            await self._s3.head_bucket(Bucket=bucket)
        except Exception:
            raise JobFailure(f"The output S3 bucket {bucket} does not exist or cannot be written. Create it, "
                             "or fix outputDataConfig.s3OutputDataConfig.s3Uri.") from None

    # --- processing -------------------------------------------------------------------------------
    async def _process(self, job: Job, files: list[InputFile]) -> tuple[str, str | None]:
        """Run the records; the terminal status and message the job ends with."""
        total = job.total_records or 0
        budget = total
        if job.faults.outcome in _ENDING_FAULTS:
            budget = int(total * job.faults.after_fraction)
        out_bucket, out_prefix = s3io.split_uri(job.output_uri)
        out_prefix = f"{out_prefix.rstrip('/')}/" if out_prefix.strip("/") else ""
        rng = random.Random(job.job_id)
        stall = job.faults.stall_after_fraction
        stall_at = None if stall is None else int(total * stall)
        ended: tuple[str, str | None] | None = None
        for file in files:
            writer = s3io.OutputWriter(self._s3, out_bucket, f"{out_prefix}{job.job_id}/{file.name}.out")
            window = _Window([], rng)
            batch: list[dict[str, Any]] = []
            async for number, line in s3io.lines(self._s3, file):
                # Checked as each mini-batch starts (a stop, an injected end, the timeout), not every line.
                ended = ended or (None if batch else self._end_reason(job, budget))
                if ended:
                    break
                if stall_at is not None and job.processed + len(batch) >= stall_at:
                    if batch:
                        await self._run_batch(job, batch, window)
                        batch = []
                    await self._stall(job)
                    ended = self._end_reason(job, budget) or ("Stopped", "The job was stopped.")
                    break
                record = _record(line, number, file)
                record.setdefault("recordId", f"RECORD{job.processed + len(batch) + 1:010d}")
                batch.append(record)
                if len(batch) >= self._settings.batch_size or job.processed + len(batch) >= budget:
                    await self._run_batch(job, batch, window)
                    batch = []
                    if len(window.lines) >= self._settings.shuffle_window:
                        await writer.write(window.take())
            if batch:
                await self._run_batch(job, batch, window)
            await writer.write(window.take())
            await writer.close()
            if ended:
                break
        return ended or self._end_reason(job, budget) or ("Completed", None)

    def _end_reason(self, job: Job, budget: int) -> tuple[str, str | None] | None:
        if job.stop_requested:
            return "Stopped", "The job was stopped; records processed before the stop are in the output."
        if job.faults.outcome in _ENDING_FAULTS and job.processed >= budget:
            outcome = job.faults.outcome
            if outcome == "Failed":
                return "Failed", job.faults.failure_message or "The job failed with an internal error (injected fault)."
            if outcome == "PartiallyCompleted":
                return "PartiallyCompleted", "Not every record was processed before the job timed out."
            return "Stopped", job.faults.failure_message or "The job was stopped (injected fault)."
        if job.processed < (job.total_records or 0) and self._seconds_left(job) <= 0:
            return "PartiallyCompleted", (f"The job reached its timeout of {job.timeout_hours} hours before every "
                                          "record was processed.")
        return None

    async def _run_batch(self, job: Job, batch: list[dict[str, Any]], window: _Window) -> None:
        loop = asyncio.get_running_loop()
        faults = job.faults
        to_run = [r for r in batch if not faults.record_fails(job.job_id, str(r["recordId"]))]
        wrong = WrongAnswers(faults.wrong_answer_rate, job.model.model_id) if faults.wrong_answer_rate > 0 else None
        outcomes = iter(await loop.run_in_executor(
            self._executor, invoke_many, self._engines, job.model, [r["modelInput"] for r in to_run], job.converse,
            None, wrong))
        ran = {id(r) for r in to_run}
        for record in batch:
            line: dict[str, Any] = {"recordId": record["recordId"], "modelInput": record["modelInput"]}
            outcome = next(outcomes) if id(record) in ran else None
            if outcome is None:
                line["error"] = {"errorCode": faults.record_error_code, "errorMessage": faults.record_error_message}
            elif outcome.error is not None:
                line["error"] = {"errorCode": outcome.error.status, "errorMessage": f"{outcome.error.code}: {outcome.error.message}"}
            else:
                line["modelOutput"] = outcome.response
                job.input_tokens += outcome.input_tokens
                job.output_tokens += outcome.output_tokens
            job.processed += 1
            if "error" in line:
                job.failed += 1
            else:
                job.succeeded += 1
            window.lines.append(orjson.dumps(line) + b"\n")
        job.last_modified_time = utcnow()
        if self._settings.delays.per_record:
            await asyncio.sleep(self._settings.delays.per_record * len(batch))

    async def _stall(self, job: Job) -> None:
        """An injected stall: InProgress with nothing processed, until stopped or timed out."""
        log.info("job_stalled", job_id=job.job_id, processed=job.processed)
        try:
            await asyncio.wait_for(self._tasks.wait_for_stop(job.job_id), timeout=max(self._seconds_left(job), 0))
        except TimeoutError:
            pass

    async def _write_manifest(self, job: Job) -> None:
        bucket, prefix = s3io.split_uri(job.output_uri)
        prefix = f"{prefix.rstrip('/')}/" if prefix.strip("/") else ""
        manifest = {
            "totalRecordCount": job.total_records or 0,
            "processedRecordCount": job.processed,
            "successRecordCount": job.succeeded,
            "errorRecordCount": job.failed,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        await s3io.put(self._s3, f"s3://{bucket}/{prefix}{job.job_id}/manifest.json.out", orjson.dumps(manifest))

    # --- status and time --------------------------------------------------------------------------
    async def _set(self, job: Job, status: str, message: str | None = None) -> None:
        if job.status == status:
            return
        job.set_status(status, message)
        log.info("job_status_changed", job_id=job.job_id, status=status)
        self._on_change()
        await self._events.job_changed(job)

    def _seconds_left(self, job: Job) -> float:
        deadline = job.expiration_time(self._settings.delays.seconds_per_hour)
        return (deadline - dt.datetime.now(dt.timezone.utc)).total_seconds()


def _record(line: bytes, number: int, file: InputFile) -> dict[str, Any]:
    """One input record, checked as Bedrock's validation checks it."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JobFailure(f"Line {number} of {file.uri} is not valid JSON ({exc}). Each line must be one JSON "
                         'object: {"recordId": "...", "modelInput": {...}}.') from None
    if not isinstance(record, dict):
        raise JobFailure(f"Line {number} of {file.uri} is not a JSON object. Each line must be one JSON object: "
                         '{"recordId": "...", "modelInput": {...}}.')
    model_input = record.get("modelInput")
    if not isinstance(model_input, dict):
        raise JobFailure(f"Line {number} of {file.uri} has no modelInput object. Each line must carry the "
                         "model's native request body under modelInput.")
    if "modelId" in model_input:
        raise JobFailure(f"Line {number} of {file.uri}: modelInput must not contain modelId; the job's modelId applies.")
    record_id = record.get("recordId")
    if record_id is not None and not isinstance(record_id, str):
        raise JobFailure(f"Line {number} of {file.uri}: recordId must be a string.")
    return record
