"""submit: admits jobs through the per-model semaphore and creates them on Bedrock, exactly once."""
from __future__ import annotations

import structlog

from shared.adapters.bedrock import BatchJobs
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import JOB_HOLDS_SLOT, Job, parse_job_name
from shared.errors import PermanentError, RetryableError
from shared.messages import CancelRun, CheckJob, CollectRun, SubmitJob
from shared.settings import Settings

log = structlog.get_logger("quarry.submit")


async def submit_job(cmd: SubmitJob, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings) -> None:
    job = await _job(store, cmd.run_id, cmd.job_key)
    run = await store.get_run(cmd.run_id)
    if job.status == "PENDING" and run is not None and run.status in ("CANCELLING", "CANCELLED"):
        await store.move_job(job, "CANCELLED", message="cancelled before submission")
        await queues.send("postprocess", CollectRun(run_id=job.run_id))
        return
    if job.status == "PENDING":
        if not await _admit(job, store=store, bedrock=bedrock, settings=settings):
            raise RetryableError(f"no free slot for {job.model_id}", delay_s=settings.poll_interval_s)
        # The intent is recorded before the call: a crash after Bedrock made the job re-sends the
        # same clientRequestToken and gets that job back.
        job = await store.move_job(job, "SUBMITTING")
    if job.status == "SUBMITTING":
        job = await _create(job, store=store, bedrock=bedrock, queues=queues)
        latest = await store.get_run(cmd.run_id)
        if job.bedrock_arn and latest is not None and latest.status == "CANCELLING":
            # Cancelled while this job was being created: cancel_run saw no ARN to stop.
            await bedrock.stop(job.bedrock_arn)
    if not job.terminal:
        # A redelivery may start a second check loop for the job; both end when the job does.
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key), delay_s=settings.poll_interval_s)


async def _create(job: Job, *, store: RunStore, bedrock: BatchJobs, queues: Queues) -> Job:
    try:
        arn = await bedrock.create(job)
    except PermanentError as exc:
        log.error("job_rejected", job_key=job.job_key, reason=str(exc))
        job = await store.move_job(job, "FAILED", message=str(exc))
        await store.release_slot(job.model_id, job.name)
        await queues.send("postprocess", CollectRun(run_id=job.run_id))
        return job
    log.info("job_submitted", job_key=job.job_key, bedrock_arn=arn)
    return await store.move_job(job, "SUBMITTED", bedrock_arn=arn)


async def _admit(job: Job, *, store: RunStore, bedrock: BatchJobs, settings: Settings) -> bool:
    """Take a slot of the model's limit, less the active jobs Quarry's table does not know about."""
    holders = await store.slot_holders(job.model_id)
    active = await bedrock.active_job_names(job.model_id)
    outside = [name for name in active if name not in holders and parse_job_name(name) is None]
    limit = settings.concurrency_for(job.model_id) - len(outside)
    admitted = limit > 0 and await store.acquire_slot(job.model_id, job.name, limit)
    log.info("job_admission", job_key=job.job_key, admitted=admitted, limit=limit, outside_jobs=len(outside))
    return admitted


async def cancel_run(cmd: CancelRun, *, store: RunStore, bedrock: BatchJobs, queues: Queues) -> None:
    run = await store.get_run(cmd.run_id)
    if run is None:
        raise PermanentError(f"no run {cmd.run_id}")
    if run.terminal or run.status == "FINALIZING":
        log.info("cancel_too_late", status=run.status)  # its results are being written already
        return
    if run.status != "CANCELLING":
        run = await store.move_run(run, "CANCELLING", cancel_requested=True)
    for job in await store.list_jobs(run.run_id):
        if job.status == "PENDING":
            await store.move_job(job, "CANCELLED", message="cancelled before submission")
        elif job.status in JOB_HOLDS_SLOT and job.bedrock_arn:
            await bedrock.stop(job.bedrock_arn)  # poll sees Stopped and collects what it made
    log.info("run_cancelling", run_id=run.run_id)
    await queues.send("postprocess", CollectRun(run_id=run.run_id))


async def _job(store: RunStore, run_id: str, key: str) -> Job:
    job = await store.get_job(run_id, key)
    if job is None:
        raise PermanentError(f"no job {key} in run {run_id}")
    return job
