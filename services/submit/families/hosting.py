"""The hosting family in submit: the provisioned throughput or deployment of a custom model, created
once (deterministic name and token), and deleted on cancel.

The job is SUBMITTING (recorded in the table) before the create call: a worker killed right after
the request leaves a job that the redelivered SubmitJob (or the watchdog) finds, and the same
token answers with the same hosting, so it is followed, and kept or deleted, like any other.
"""
from __future__ import annotations

import structlog

from services.submit.families.customization_job import end, retry_later
from shared.adapters.customization import Customizations
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.crashpoints import crash_point
from shared.domain.runs import Job, Run
from shared.errors import PermanentError, RetryableError
from shared.messages import CheckJob
from shared.settings import Settings

log = structlog.get_logger("quarry.submit")


async def submit(job: Job, *, store: RunStore, queues: Queues, settings: Settings,
                 customizations: Customizations) -> None:
    run = await store.get_run(job.run_id)
    stopping = run is None or run.terminal or run.status == "CANCELLING"
    if job.status == "PENDING":
        if stopping:
            await end(job, "CANCELLED", "cancelled before the hosting was requested", store=store, queues=queues)
            return
        job = await store.move_job(job, "SUBMITTING")  # recorded the moment it is requested
    if job.status != "SUBMITTING":
        return
    if stopping:
        # Cancelled (or failed) while the request was in flight: delete whatever it made.
        await customizations.delete_hosting(job.hosting_kind, job.name)
        await end(job, "CANCELLED", "deleted: the run ended while its hosting was being requested",
                  store=store, queues=queues)
        return
    units = run.customization.hosting.model_units
    try:
        arn = await customizations.create_hosting(job.hosting_kind, name=job.name, token=job.client_token,
                                                  model_arn=job.custom_model_arn, units=units, run_id=run.run_id)
    except RetryableError as exc:
        await retry_later(job, str(exc), store=store, queues=queues)
        return
    except PermanentError as exc:
        log.error("hosting_rejected", job_key=job.job_key, reason=str(exc))
        await end(job, "FAILED", str(exc), store=store, queues=queues)
        return
    log.info("hosting_requested", hosting_arn=arn, kind=job.hosting_kind)
    crash_point("submit.after_hosting_requested")
    job = await store.move_job(job, "SUBMITTED", bedrock_arn=arn, throttles=0, message=None)
    latest = await store.get_run(job.run_id)
    if latest is None or latest.terminal or latest.status == "CANCELLING":
        await customizations.delete_hosting(job.hosting_kind, arn)
        await end(job, "CANCELLED", "deleted: the run ended while its hosting was being requested",
                  store=store, queues=queues)
        return
    await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                      delay_s=settings.poll_interval_s)


async def cancel(job: Job, run: Run, *, store: RunStore, customizations: Customizations) -> None:
    """Delete the hosting now (by ARN, or by its name if the ARN was never kept)."""
    if job.status == "PENDING":
        await store.move_job(job, "CANCELLED", message="cancelled before the hosting was requested")
    elif job.status == "SUBMITTING" and not job.bedrock_arn:
        return  # its create may be in flight: submit sees the run CANCELLING and deletes what it made
    elif not job.terminal:
        await customizations.delete_hosting(job.hosting_kind, job.bedrock_arn or job.name)
        await store.move_job(job, "CANCELLED", message="deleted: the run was cancelled")
        log.info("hosting_deleted", hosting_arn=job.bedrock_arn, reason="cancelled")
