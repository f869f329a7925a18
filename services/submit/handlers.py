"""submit: admits jobs through the per-model semaphore and creates them on Bedrock, exactly once.

Each family of job is created by its own module (services/submit/families/); this one dispatches."""
from __future__ import annotations

import structlog

from services.submit import families
from services.submit.families import batch_job
from services.submit.evaluations import cancel_evaluation
from shared.adapters.customization import Customizations
from shared.adapters.bedrock import BatchJobs
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Job
from shared.errors import PermanentError
from shared.messages import CancelRun, CollectRun, SubmitJob
from shared.settings import Settings

log = structlog.get_logger("quarry.submit")


async def submit_job(cmd: SubmitJob, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings,
                     customizations: Customizations | None = None) -> None:
    job = await _job(store, cmd.run_id, cmd.job_key)
    if cmd.seq is not None and cmd.seq != job.submit_seq:
        log.info("stale_submit_dropped", job_key=job.job_key, seq=cmd.seq, live_seq=job.submit_seq)
        return  # a duplicate of an admission loop that has moved on: the live one carries the job
    if job.family != "batch_job":  # customization jobs and hosting (services/submit/families)
        await families.submit(job, store=store, queues=queues, settings=settings, customizations=customizations)
        return
    await batch_job.submit(cmd, job, store=store, bedrock=bedrock, queues=queues, settings=settings)


async def cancel_run(cmd: CancelRun, *, store: RunStore, bedrock: BatchJobs, queues: Queues,
                     customizations: Customizations | None = None) -> None:
    run = await store.get_run(cmd.run_id)
    if run is None:
        raise PermanentError(f"no run {cmd.run_id}")
    if run.terminal or run.status == "FINALIZING":
        log.info("cancel_too_late", status=run.status)  # its results are being written already
        return
    if run.status != "CANCELLING":
        run = await store.move_run(run, "CANCELLING", cancel_requested=True)
    if run.kind == "evaluate":
        await cancel_evaluation(run, store=store, queues=queues)  # its jobs are its children's
        return
    if run.kind == "customize":
        await families.cancel_customization(run, store=store, queues=queues, customizations=customizations)
        return
    for job in await store.list_jobs(run.run_id):
        await batch_job.cancel(job, store=store, bedrock=bedrock)
    log.info("run_cancelling", run_id=run.run_id)
    await queues.send("postprocess", CollectRun(run_id=run.run_id))


async def _job(store: RunStore, run_id: str, key: str) -> Job:
    job = await store.get_job(run_id, key)
    if job is None:
        raise PermanentError(f"no job {key} in run {run_id}")
    return job
