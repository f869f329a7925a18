"""The batch_job family in poll: a Bedrock batch inference job followed to its end, by Bedrock's
events (fast) and delayed re-checks (sure). Moved here from services/poll/handlers.py."""
from __future__ import annotations

from typing import Any

import structlog

from services.poll.families.batch_job_deadlines import watch
from services.poll.families.job_moves import check_applies, move_job
from shared.adapters.bedrock import BatchJobs, BedrockJobState
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import FROM_BEDROCK, JOB_TERMINAL, Job, parse_job_name
from shared.errors import QuarryError
from shared.messages import BedrockJobStateChanged, CheckJob
from shared.settings import Settings
# Submit's rule of which jobs wait for a slot and how they are woken, so the two agree.
from shared.slot_wakes import wake_waiting

log = structlog.get_logger("quarry.poll")


async def check(cmd: CheckJob, job: Job, *, store: RunStore, bedrock: BatchJobs, queues: Queues,
                settings: Settings) -> None:
    if not check_applies(cmd, job):
        return
    # The check moves the loop number on in the same write: of two copies of one CheckJob, only
    # one wins that write, so only one loop survives.
    state = await bedrock.get(job.bedrock_arn)
    gone = await _gone(job, state, bedrock=bedrock, settings=settings)
    # Progress, stuck and the deadline's cutoff (which stops the job): batch_job_deadlines.py.
    promised = {} if gone or state is None else await watch(job, state, store=store, bedrock=bedrock, settings=settings)
    job = await record(job, None if gone else state, store=store, queues=queues, settings=settings, gone=gone,
                       check_seq=job.check_seq + 1, **promised)
    if not job.terminal:
        # Still running is a normal outcome: look again later, without holding a worker.
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                          delay_s=settings.poll_interval_s)


async def _gone(job: Job, state: BedrockJobState | None, *, bedrock: BatchJobs, settings: Settings) -> str | None:
    """Why the job has ended though Bedrock's answer does not say so: submit's slot reconciliation
    saw Bedrock not list it among the model's active jobs for longer than the grace period."""
    if job.absent_since is None or (state is not None and FROM_BEDROCK.get(state.status) in JOB_TERMINAL):
        return None
    if state is not None:
        # Still running there but uncounted by Bedrock's list: stop it, so it cannot exceed the quota.
        try:
            await bedrock.stop(job.bedrock_arn)
        except QuarryError as exc:
            log.warning("absent_job_not_stopped", job_key=job.job_key, reason=str(exc))
    return (f"Bedrock has not listed job {job.bedrock_arn} among the model's active jobs (ListModelInvocationJobs) "
            f"since {job.absent_since.isoformat()}, longer than the {settings.absent_job_grace_s} s grace: it has "
            "ended; its records are salvaged from what it wrote and retried")


async def job_state_changed(event: BedrockJobStateChanged, *, store: RunStore, bedrock: BatchJobs, queues: Queues,
                            settings: Settings) -> None:
    ours = parse_job_name(event.detail.batchJobName)
    if ours is None:
        return  # a job Quarry did not start
    job = await store.get_job(*ours)
    if job is None or job.terminal or job.status == "PENDING":
        return  # ended already, or waiting to be created again after a throttled create
    # The event is a hint; the job's record counts come from GetModelInvocationJob.
    await record(job.model_copy(update={"bedrock_arn": job.bedrock_arn or event.detail.batchJobArn}),
                 await bedrock.get(event.detail.batchJobArn), store=store, queues=queues, settings=settings)


async def record(job: Job, state: BedrockJobState | None, *, store: RunStore, queues: Queues, settings: Settings,
                 gone: str | None = None, **also: Any) -> Job:
    """The job with Bedrock's status and progress, written only if something changed. A job that
    ends gives its slot back and asks for its run's collection in the same write, then wakes its
    run's jobs waiting for that slot. No state (or `gone`, why Bedrock no longer knows it) ends the
    job FAILED."""
    if state is None:
        # Bedrock answered 404, or has not listed the job for too long: it no longer knows the
        # job, so the job has ended. Postprocess salvages whatever output it left and retries the rest.
        status, progress = "FAILED", {"bedrock_status": "NotListed" if gone else "NotFound", "message": gone or (
            f"Bedrock no longer knows job {job.bedrock_arn} (GetModelInvocationJob answered 404); "
            "its records are salvaged from what it wrote and retried")}
    else:
        status = FROM_BEDROCK.get(state.status, job.status)
        message = state.message
        if status == "COMPLETED" and state.total and state.failed >= state.total:
            # Judged by its counts, not its status: a job whose every record failed failed.
            status = "FAILED"
            message = (f"Bedrock reported the job Completed, but every one of its {state.total:,} records failed "
                       f"(errorRecordCount {state.failed:,}); its records are retried once")
        progress = {"bedrock_status": state.status, "processed": state.processed, "succeeded": state.succeeded,
                    "failed": state.failed, "message": message, "bedrock_arn": state.arn}
    changes = {**progress, **also}
    if status == job.status:
        if all(getattr(job, key) == value for key, value in changes.items()):
            return job
        return await store.update_job(job, **changes)
    log.info("job_status_changed", job_key=job.job_key, status=status, bedrock_status=progress["bedrock_status"],
             processed=progress.get("processed"))
    moved = await move_job(job, status, collect=status in JOB_TERMINAL, store=store, queues=queues, **changes)
    if status in JOB_TERMINAL:
        await wake_waiting(moved, store=store, queues=queues, settings=settings)
    return moved
