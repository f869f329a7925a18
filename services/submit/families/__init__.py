"""How submit creates (and cancel stops) each family of job (Job.family) on Bedrock, exactly once.

batch_job: services/submit/handlers.py (admission through the model's slots, then the create).
customization_job: a model customization job. hosting: the provisioned throughput or deployment
of a custom model. Every create sends the job's deterministic clientRequestToken, recorded as
intended (SUBMITTING) before the call, so a crash or redelivery gets the same resource back.
"""
from __future__ import annotations

import structlog

from shared.adapters.customization import Customizations
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Job, Run
from shared.errors import PermanentError
from shared.messages import CancelRun, CollectRun
from shared.settings import Settings

log = structlog.get_logger("quarry.submit")


async def submit(job: Job, *, store: RunStore, queues: Queues, settings: Settings,
                 customizations: Customizations | None) -> None:
    """Create a job of a family other than batch_job."""
    from services.submit.families import customization_job, hosting  # noqa: PLC0415 - they import this package

    if customizations is None:
        raise PermanentError(f"job {job.job_key} of run {job.run_id} is a {job.family}, which this submit worker "
                             "was not wired for")
    module = {"customization_job": customization_job, "hosting": hosting}[job.family]
    await module.submit(job, store=store, queues=queues, settings=settings, customizations=customizations)


async def cancel_customization(run: Run, *, store: RunStore, queues: Queues,
                               customizations: Customizations | None) -> None:
    """Stop the customization job, delete the hosting, cancel the gate; postprocess then ends the run."""
    from services.submit.families import customization_job, hosting  # noqa: PLC0415

    if customizations is None:
        raise PermanentError(f"run {run.run_id} is a customization, which this submit worker was not wired for")
    for job in await store.list_jobs(run.run_id):
        module = {"customization_job": customization_job, "hosting": hosting}[job.family]
        await module.cancel(job, run, store=store, customizations=customizations)
    if "gate" in run.children:
        await queues.send("submit", CancelRun(run_id=run.children["gate"]))
    log.info("run_cancelling", run_id=run.run_id)
    await queues.send("postprocess", CollectRun(run_id=run.run_id))
