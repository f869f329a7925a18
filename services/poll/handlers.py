"""poll: follows each active job to its end, by Bedrock's events (fast) and delayed re-checks (sure)."""
from __future__ import annotations

import structlog

from shared.adapters.bedrock import BatchJobs, BedrockJobState
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import FROM_BEDROCK, Job, parse_job_name
from shared.messages import BedrockJobStateChanged, CheckJob, CollectRun
from shared.settings import Settings

log = structlog.get_logger("quarry.poll")


async def check_job(cmd: CheckJob, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings) -> None:
    job = await store.get_job(cmd.run_id, cmd.job_key)
    if job is None or job.bedrock_arn is None:
        return  # not submitted yet: submit owns it and schedules the first check
    if not job.terminal:
        job = await record(job, await bedrock.get(job.bedrock_arn), store=store)
    if job.terminal:
        await finish(job, store=store, queues=queues)
    else:
        # Still running is a normal outcome: look again later, without holding a worker.
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key), delay_s=settings.poll_interval_s)


async def job_state_changed(event: BedrockJobStateChanged, *, store: RunStore, bedrock: BatchJobs, queues: Queues) -> None:
    ours = parse_job_name(event.detail.batchJobName)
    if ours is None:
        return  # a job Quarry did not start
    job = await store.get_job(*ours)
    if job is None or job.terminal:
        return
    # The event is a hint; the job's record counts come from GetModelInvocationJob.
    job = await record(job.model_copy(update={"bedrock_arn": job.bedrock_arn or event.detail.batchJobArn}),
                       await bedrock.get(event.detail.batchJobArn), store=store)
    if job.terminal:
        await finish(job, store=store, queues=queues)


async def record(job: Job, state: BedrockJobState, *, store: RunStore) -> Job:
    """The job with Bedrock's status and progress, written only if something changed."""
    status = FROM_BEDROCK.get(state.status, job.status)
    progress = {"bedrock_status": state.status, "processed": state.processed, "succeeded": state.succeeded,
                "failed": state.failed, "message": state.message, "bedrock_arn": state.arn}
    if status == job.status:
        if all(getattr(job, key) == value for key, value in progress.items()):
            return job
        return await store.update_job(job, **progress)
    log.info("job_status_changed", job_key=job.job_key, status=status, bedrock_status=state.status,
             processed=state.processed)
    return await store.move_job(job, status, **progress)


async def finish(job: Job, *, store: RunStore, queues: Queues) -> None:
    """Free the job's slot and ask for the run to be collected; both are safe to repeat."""
    await store.release_slot(job.model_id, job.name)
    await queues.send("postprocess", CollectRun(run_id=job.run_id))
