"""The customization_job family in submit: create the run's model customization job once, or stop it."""
from __future__ import annotations

import structlog

from shared.adapters.customization import Customizations
from shared.adapters.queues import MAX_DELAY_S, Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.domain import layout
from shared.domain.runs import Job, Run
from shared.errors import PermanentError, RetryableError
from shared.messages import CheckJob, CollectRun, SubmitJob
from shared.settings import Settings

log = structlog.get_logger("quarry.submit")


def output_uri(settings: Settings, run_id: str) -> str:
    """Where Bedrock writes the job's artifacts (metrics CSVs): under the run's work prefix."""
    return f"{layout.run_prefix(settings, run_id)}/customization/"


async def submit(job: Job, *, store: RunStore, queues: Queues, settings: Settings,
                 customizations: Customizations) -> None:
    run = await store.get_run(job.run_id)
    if job.status == "PENDING":
        if run is None or run.terminal or run.status == "CANCELLING":
            await end(job, "CANCELLED", "cancelled before submission", store=store, queues=queues)
            return
        job = await store.move_job(job, "SUBMITTING")  # the intent, recorded before the call
    if job.status != "SUBMITTING":
        return
    if run is None or run.terminal:
        # The run ended (the watchdog failed it, say) while this create was pending: a create that
        # went through before a crash is stopped by name, and none is made now.
        await customizations.stop_job(job.name)
        await end(job, "CANCELLED", "cancelled: the run ended before its customization job was created",
                  store=store, queues=queues)
        return
    spec = run.customization
    try:
        arn = await customizations.create_job(
            name=job.name, token=job.client_token, base_model=spec.base_model, kind=spec.type,
            custom_model_name=spec.custom_model_name, training_uri=spec.training_data,
            validation_uri=spec.validation_data, output_uri=job.output_uri,
            hyperparameters=(run.preflight or {}).get("hyperparameters") or spec.hyperparameters, run_id=run.run_id)
    except RetryableError as exc:
        await retry_later(job, str(exc), store=store, queues=queues)
        return
    except PermanentError as exc:
        log.error("customization_job_rejected", job_key=job.job_key, reason=str(exc))
        await end(job, "FAILED", str(exc), store=store, queues=queues)
        return
    job = await store.move_job(job, "SUBMITTED", bedrock_arn=arn, throttles=0, message=None)
    log.info("customization_job_submitted", bedrock_arn=arn)
    latest = await store.get_run(job.run_id)
    if latest is None or latest.terminal or latest.status == "CANCELLING":
        await customizations.stop_job(arn)  # cancelled or failed while it was being created
    await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                      delay_s=settings.poll_interval_s)


async def cancel(job: Job, run: Run, *, store: RunStore, customizations: Customizations) -> None:
    if job.status == "PENDING":
        await store.move_job(job, "CANCELLED", message="cancelled before submission")
    elif not job.terminal and job.bedrock_arn:
        await customizations.stop_job(job.bedrock_arn)  # poll sees Stopped and asks for collection


async def retry_later(job: Job, reason: str, *, store: RunStore, queues: Queues) -> None:
    """Throttled or unavailable: the same create again later (same token), backing off per throttle."""
    throttles = job.throttles + 1
    delay = min(5 * 2 ** (throttles - 1), MAX_DELAY_S)
    seq = job.submit_seq + 1
    sent = [Outgoing("submit", SubmitJob(run_id=job.run_id, job_key=job.job_key, seq=seq), delay_s=delay)]
    await store.update_job(job, submit_seq=seq, throttles=throttles, message=reason, send=sent)
    await deliver(sent, queues=queues, store=store)
    log.info("create_retried_later", job_key=job.job_key, delay_s=delay, reason=reason)


async def end(job: Job, status: str, message: str, *, store: RunStore, queues: Queues) -> Job:
    """The job ended without Bedrock ending it; its run's collection asked for in the same write."""
    sent = [Outgoing("postprocess", CollectRun(run_id=job.run_id))]
    job = await store.move_job(job, status, message=message, send=sent)
    await deliver(sent, queues=queues, store=store)
    return job
