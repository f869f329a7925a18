"""poll: follows each active job to its end, by Bedrock's events (fast) and delayed re-checks (sure).

Each family of job is followed by its own module (services/poll/families/); this one dispatches."""
from __future__ import annotations

from services.poll.families import batch_job, customization_job, hosting
from shared.adapters.bedrock import BatchJobs
from shared.adapters.customization import Customizations
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.errors import PermanentError
from shared.messages import BedrockJobStateChanged, CheckJob, CustomizationJobStateChanged
from shared.settings import Settings


async def check_job(cmd: CheckJob, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings,
                    customizations: Customizations | None = None) -> None:
    job = await store.get_job(cmd.run_id, cmd.job_key)
    if job is None:
        return  # not recorded (a stale message of a run that is gone)
    if job.family == "batch_job":
        await batch_job.check(cmd, job, store=store, bedrock=bedrock, queues=queues, settings=settings)
        return
    if customizations is None:
        raise PermanentError(f"job {job.job_key} is a {job.family}, which this poll worker was not wired for")
    module = customization_job if job.family == "customization_job" else hosting
    await module.check(cmd, job, store=store, queues=queues, settings=settings, customizations=customizations)


async def job_state_changed(event: BedrockJobStateChanged, *, store: RunStore, bedrock: BatchJobs, queues: Queues,
                            settings: Settings) -> None:
    await batch_job.job_state_changed(event, store=store, bedrock=bedrock, queues=queues, settings=settings)


async def customization_state_changed(event: CustomizationJobStateChanged, *, store: RunStore, queues: Queues,
                                      customizations: Customizations) -> None:
    await customization_job.state_changed(event, store=store, queues=queues, customizations=customizations)
