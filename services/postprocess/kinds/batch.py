"""The batch kind's collection: once every job has ended, retry what failed once, then join the
results back to every input row and finish the run (moved here from handlers.py)."""
from __future__ import annotations

import asyncio

import orjson
import structlog

from services.postprocess.collecting import (
    RetryPlan, Tally, assemble_results, cache_answers, plan_retries, schema_follow_ups,
)
from services.postprocess.promises import promises_summary
from services.postprocess.kinds import CollectPorts
from shared.adapters.bedrock import Runtime
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.crashpoints import crash_point
from shared.domain import layout
from shared.domain.runs import Job, Run, now, outcome_of
from shared.domain.summary import run_summary
from shared.messages import RunFinished, SubmitJob
from shared.ondemand import invoke_records
from shared.settings import Settings

log = structlog.get_logger("quarry.postprocess")


async def collect(run: Run, *, ports: CollectPorts) -> None:
    store, queues, objects, runtime, settings = ports.store, ports.queues, ports.objects, ports.runtime, ports.settings
    jobs = await store.list_jobs(run.run_id)
    if any(not job.terminal for job in jobs):
        return  # the last job to end sends the CollectRun that finishes the run
    if run.status == "CANCELLING" and run.total_rows is None and not jobs:
        # Cancelled before its input was staged: there are no rows to collect, only an end to report.
        await store.move_run(run, "CANCELLED", error="cancelled before its input was read; no row was sent")
        await queues.send("notify", RunFinished(run_id=run.run_id, outcome="CANCELLED"))
        log.info("run_finished", outcome="CANCELLED", rows=0, failed=0)
        return
    if run.status == "RUNNING":
        plan = await asyncio.to_thread(plan_retries, run, jobs, objects=objects, settings=settings)
        waiting = await _retry(run, plan, store=store, queues=queues, objects=objects, runtime=runtime, settings=settings)
        if plan.on_demand:
            retried = sum(len(records) for records in plan.on_demand.values())
            run = await store.update_run(run, on_demand_records=run.on_demand_records + retried)
        if waiting:
            return
    if run.status in ("RUNNING", "CANCELLING"):
        run = await store.move_run(run, "FINALIZING")
    await _finish(run, await store.list_jobs(run.run_id), store=store, queues=queues, objects=objects, settings=settings,
                  cache=ports.cache, runtime=runtime)


async def _retry(run: Run, plan: RetryPlan, *, store: RunStore, queues: Queues, objects: SyncObjects,
                 runtime: Runtime, settings: Settings) -> bool:
    """Start the retries; True if the run must wait for retry jobs."""
    for index, records in plan.on_demand.items():
        lines = await invoke_records(records, model_id=run.spec.model_id, runtime=runtime,
                                     concurrency=settings.on_demand_concurrency)
        await asyncio.to_thread(objects.put, layout.ondemand_uri(settings, run.run_id, index), b"".join(lines))
        log.info("records_retried_on_demand", chunk=index, records=len(records))
    if not plan.jobs:
        return False
    # The retry jobs and their SubmitJobs are one write: a crash after it leaves the messages in
    # the outbox for the watchdog to send, never jobs PENDING for ever.
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key)) for job in plan.jobs]
    if await store.put_new_jobs(plan.jobs, send=sent):
        crash_point("postprocess.after_retry_jobs_recorded")
        await deliver(sent, queues=queues, store=store)
        log.info("retry_jobs_started", jobs=len(plan.jobs), records=sum(job.records for job in plan.jobs))
    return True


async def _finish(run: Run, jobs: list, *, store: RunStore, queues: Queues, objects: SyncObjects,
                  settings: Settings, cache: ResponseCache | None, runtime: Runtime | None = None) -> None:
    if run.spec.output_schema is not None and runtime is not None:
        await _follow_up_invalid_outputs(run, jobs, objects=objects, runtime=runtime, settings=settings)
    tally = Tally()
    result_uri, result = await asyncio.to_thread(assemble_results, run, jobs, objects=objects, settings=settings,
                                                 tally=tally)
    if cache is not None and run.spec.cache in ("reuse", "refresh"):
        # The answers are joined: now they are worth keeping for any later run that asks the same.
        stored = await asyncio.to_thread(cache_answers, run, jobs, objects=objects, cache=cache, settings=settings)
        log.info("answers_cached", answers=stored)
    summary = run_summary(
        model_id=run.spec.model_id, rows=result.rows, succeeded=result.succeeded, failed=result.failed,
        input_tokens=result.input_tokens, output_tokens=result.output_tokens, errors=result.errors,
        started=run.created_at, ended=now(), jobs=len(jobs), retried_jobs=sum(1 for j in jobs if j.attempt == 1),
        on_demand_records=run.on_demand_records, result_uri=result_uri,
    )
    summary.update(promises_summary(run, jobs, result, tally, ended=now()))
    outcome = outcome_of(result.rows, result.failed, run.cancel_requested)
    await asyncio.to_thread(objects.put, result_uri.rsplit("/", 1)[0] + "/summary.json",
                            orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=outcome))]
    await store.move_run(run, outcome, result_uri=result_uri, summary=summary, send=sent,
                         error=run.error or (None if outcome == "SUCCEEDED" else _jobs_failure(jobs)))
    crash_point("postprocess.after_outcome_recorded")
    await deliver(sent, queues=queues, store=store)
    log.info("run_finished", outcome=outcome, rows=result.rows, failed=result.failed)


async def _follow_up_invalid_outputs(run: Run, jobs: list[Job], *, objects: SyncObjects, runtime: Runtime,
                                     settings: Settings) -> None:
    """Ask once more, on demand, for each output that missed the run's output_schema, with the
    validation error in a follow-up turn; the answers go beside the chunk's other outputs."""
    wanted = await asyncio.to_thread(schema_follow_ups, run, jobs, objects=objects, settings=settings)
    for index, records in wanted.items():
        lines = await invoke_records(records, model_id=run.spec.model_id, runtime=runtime,
                                     concurrency=settings.on_demand_concurrency) if records else []
        # Written even when empty: the chunk is followed up once, however often collection runs.
        await asyncio.to_thread(objects.put, layout.schema_retry_uri(settings, run.run_id, index), b"".join(lines))
        if records:
            log.info("invalid_outputs_followed_up", chunk=index, records=len(records))


def _jobs_failure(jobs: list[Job]) -> str | None:
    """Why jobs failed whole, in Bedrock's own words: what the run's email must say, rather than
    leave it to each row's 'not processed'."""
    reasons = [f"job {job.name} {job.status.lower()}: {job.message}"
               for job in sorted(jobs, key=lambda j: (j.index, j.attempt))
               if job.status in ("FAILED", "EXPIRED") and job.message]
    if not reasons:
        return None
    more = f" (and {len(reasons) - 3} more)" if len(reasons) > 3 else ""
    return "; ".join(reasons[:3]) + more
