"""The customization_job family in poll: a model customization job followed to its end, by
Bedrock's 'Model Customization Job State Change' events (fast) and delayed re-checks (sure)."""
from __future__ import annotations

import re

import structlog

from services.poll.families.job_moves import check_applies, move_job
from shared.adapters.customization import Customizations, CustomizationState
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import JOB_TERMINAL, Job
from shared.messages import CheckJob, CustomizationJobStateChanged
from shared.settings import Settings

log = structlog.get_logger("quarry.poll")

CUSTOMIZATION_KEY = "customization"
_NAME = re.compile(rf"^quarry-(?P<run_id>[0-9a-f]{{32}})-{CUSTOMIZATION_KEY}$")
FROM_BEDROCK = {"InProgress": "RUNNING", "Stopping": "RUNNING", "Completed": "COMPLETED", "Failed": "FAILED",
                "Stopped": "STOPPED"}


async def check(cmd: CheckJob, job: Job, *, store: RunStore, queues: Queues, settings: Settings,
                customizations: Customizations) -> None:
    if not check_applies(cmd, job):
        return
    job = await record(job, await customizations.get_job(job.bedrock_arn), store=store, queues=queues,
                       check_seq=job.check_seq + 1)
    if not job.terminal:
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                          delay_s=settings.poll_interval_s)


async def state_changed(event: CustomizationJobStateChanged, *, store: RunStore, queues: Queues,
                        customizations: Customizations) -> None:
    match = _NAME.match(event.detail.jobName)
    if match is None:
        return  # a job Quarry did not start
    job = await store.get_job(match["run_id"], CUSTOMIZATION_KEY)
    if job is None or job.terminal or job.status == "PENDING":
        return
    # The event is a hint; the job's state (losses, the custom model) comes from GetModelCustomizationJob.
    arn = job.bedrock_arn or event.detail.jobArn
    await record(job.model_copy(update={"bedrock_arn": arn}), await customizations.get_job(arn), store=store,
                 queues=queues)


async def record(job: Job, state: CustomizationState | None, *, store: RunStore, queues: Queues, **also) -> Job:
    """The job with Bedrock's status and losses, written only if something changed; an end asks for
    the run's collection in the same write."""
    if state is None:
        status, changes = "FAILED", {"bedrock_status": "NotFound", "message": (
            f"Bedrock no longer knows customization job {job.bedrock_arn} (GetModelCustomizationJob answered 404)")}
    else:
        status = FROM_BEDROCK.get(state.status, job.status)
        changes = {"bedrock_status": state.status, "bedrock_arn": state.arn, "message": state.failure_message,
                   "custom_model_arn": state.output_model_arn or job.custom_model_arn,
                   "training_loss": state.training_loss, "validation_loss": state.validation_loss}
    changes |= also
    if status == job.status:
        if all(getattr(job, key) == value for key, value in changes.items()):
            return job
        return await store.update_job(job, **changes)
    log.info("customization_job_status_changed", run_id=job.run_id, status=status,
             bedrock_status=changes["bedrock_status"], training_loss=changes.get("training_loss"))
    return await move_job(job, status, collect=status in JOB_TERMINAL, store=store, queues=queues, **changes)
