"""poll: follows each active job to its end, by Bedrock's events (fast) and delayed re-checks (sure).

Each family of job is followed by its own module (services/poll/families/); this one dispatches."""
from __future__ import annotations

from services.poll.families import batch_job
from shared.adapters.bedrock import BatchJobs
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.messages import BedrockJobStateChanged, CheckJob
from shared.settings import Settings


async def check_job(cmd: CheckJob, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings) -> None:
    job = await store.get_job(cmd.run_id, cmd.job_key)
    if job is None:
        return  # not recorded (a stale message of a run that is gone)
    await batch_job.check(cmd, job, store=store, bedrock=bedrock, queues=queues, settings=settings)


async def job_state_changed(event: BedrockJobStateChanged, *, store: RunStore, bedrock: BatchJobs, queues: Queues) -> None:
    await batch_job.job_state_changed(event, store=store, bedrock=bedrock, queues=queues)
