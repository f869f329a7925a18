"""The batch kind's start: stage one input for one spec, then jobs (or on demand when too few)."""
from __future__ import annotations

import asyncio

import orjson
import structlog

from services.preprocess.kinds import StartPorts
from services.preprocess.outcomes import fail_run, move_unless_cancelled
from services.preprocess.staging import Staged, stage_input
from shared.adapters.queues import Outgoing, deliver
from shared.crashpoints import crash_point
from shared.domain import layout
from shared.domain.access import input_refusal
from shared.domain.runs import Run
from shared.errors import InvalidRunSpec, PermanentError
from shared.messages import CollectRun, SubmitJob
from shared.ondemand import invoke_records

log = structlog.get_logger("quarry.preprocess")


async def start(run: Run, *, ports: StartPorts) -> None:
    store, queues, settings = ports.store, ports.queues, ports.settings
    try:
        # Whoever asked, the deployment decides what is read and which models run. A child of an
        # evaluation reads the dataset its parent staged (and checked) in the work bucket.
        if not _staged_by_parent(run, settings):
            refusal = input_refusal(run.input_uri, inputs_bucket=settings.inputs_bucket, allowed=settings.allowed_inputs)
            if refusal:
                raise InvalidRunSpec(refusal)
        if ports.models is not None:
            await ports.models.check(run.spec.model_id)
        staged = await asyncio.to_thread(stage_input, run, objects=ports.objects, settings=settings, cache=ports.cache)
    except PermanentError as exc:
        # Every error names the file. The reason can quote the input's structure, never its text:
        # safe at the default level.
        reason = str(exc) if run.input_uri in str(exc) else f"{run.input_uri}: {exc}"
        log.info("run_input_rejected", reason=reason)
        await fail_run(run, reason, store=store, queues=queues)
        return
    latest = await store.get_run(run.run_id)
    if latest is None or latest.terminal:
        log.info("run_ended_while_staging", status=latest.status if latest else None)  # cancelled meanwhile
        return
    if not staged.jobs:
        await _run_on_demand(run, staged, ports=ports)
    else:
        await _start_jobs(run, staged, ports=ports)


def _staged_by_parent(run: Run, settings) -> bool:
    """An evaluation's child reads what its parent staged under its own prefix in the work bucket (the
    dataset, or a judge dataset)."""
    return run.parent_run_id is not None and run.input_uri.startswith(layout.run_prefix(settings, run.parent_run_id) + "/")


async def _start_jobs(run: Run, staged: Staged, *, ports: StartPorts) -> None:
    store, queues = ports.store, ports.queues
    await store.put_new_jobs(staged.jobs)
    # The run's move and its jobs' SubmitJobs are one write (the outbox): a crash after it leaves
    # the messages for the watchdog to send, never jobs PENDING for ever.
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key)) for job in staged.jobs]
    run = await move_unless_cancelled(run, "RUNNING", store=store, send=sent, total_rows=staged.total_rows,
                                      jobs_total=len(staged.jobs), cached_records=staged.cached_records)
    crash_point("preprocess.after_jobs_recorded")
    await deliver(sent, queues=queues, store=store)
    log.info("run_started", rows=staged.total_rows, jobs=len(staged.jobs), cached=staged.cached_records)


async def _run_on_demand(run: Run, staged: Staged, *, ports: StartPorts) -> None:
    """Fewer rows than a job's minimum (or a model Bedrock runs no batch jobs for): call InvokeModel
    for each, as a job's output would be. Rows answered from the cache need no call at all."""
    store, queues, settings = ports.store, ports.queues, ports.settings
    records = [orjson.loads(line) for line in staged.on_demand_records]
    lines = await invoke_records(records, model_id=run.spec.model_id, runtime=ports.runtime,
                                 concurrency=settings.on_demand_concurrency)
    await asyncio.to_thread(ports.objects.put, layout.ondemand_uri(settings, run.run_id, 0), b"".join(lines))
    sent = [Outgoing("postprocess", CollectRun(run_id=run.run_id))]
    await move_unless_cancelled(run, "FINALIZING", store=store, send=sent, total_rows=staged.total_rows,
                                on_demand=True, on_demand_records=len(records), cached_records=staged.cached_records)
    await deliver(sent, queues=queues, store=store)
    log.info("run_ran_on_demand", rows=staged.total_rows, cached=staged.cached_records)
