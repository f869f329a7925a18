"""The batch kind's start: stage one input for one spec, then jobs (or on demand when too few)."""
from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

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
from shared.errors import InvalidRunSpec, PermanentError, QuarryError
from shared.domain.bodies import family_of
from shared.domain.estimate import estimate, over_budget
from shared.messages import CollectRun, RunFinished, SubmitJob
from shared.ondemand import invoke_stream

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
    estimate = staged_estimate(run, staged)
    if run.spec.dry_run:
        await _end_dry_run(run, estimate, ports=ports)
        return
    if over_budget(estimate, run.spec.budget_usd):
        # Refused before any job or call: the estimate goes into the error, the summary and the email.
        cost = "unknown (the model has no price)" if estimate["planned_usd"] is None else f"${estimate['planned_usd']:,.4f}"
        reason = (f"{run.input_uri}: the run would cost an estimated {cost} (at most; output counted at max_tokens), "
                  f"over its budget_usd of ${run.spec.budget_usd:,.4f}; no job was created. Raise budget_usd, "
                  "lower max_tokens or send fewer rows")
        log.info("run_over_budget", planned_usd=estimate["planned_usd"], budget_usd=run.spec.budget_usd)
        await fail_run(run, reason, store=store, queues=queues, summary={"estimate": estimate})
        return
    if not staged.jobs:
        await _run_on_demand(run, staged, ports=ports)
    else:
        await _start_jobs(run, staged, ports=ports)


def staged_estimate(run: Run, staged: Staged) -> dict:
    """What the staged run would cost as planned (shared/domain/estimate.py)."""
    return estimate(
        model_id=run.spec.model_id, rows=staged.total_rows, jobs=len(staged.jobs),
        job_records=sum(job.records for job in staged.jobs), job_bytes=sum(job.bytes for job in staged.jobs),
        on_demand_records=len(staged.on_demand_records),
        on_demand_bytes=getattr(staged.on_demand_records, "nbytes", None)
        or sum(len(line) + 1 for line in staged.on_demand_records),
        cached_records=staged.cached_records, deduplicated_records=staged.deduplicated_records,
        max_tokens=run.spec.params.max_tokens, embeddings=family_of(run.spec.family_model) == "titan-embed")


async def _end_dry_run(run: Run, est: dict, *, ports: StartPorts) -> None:
    """A dry run ends here, SUCCEEDED with the estimate as its summary: no job, no call, nothing written."""
    store, queues = ports.store, ports.queues
    run = await move_unless_cancelled(run, "FINALIZING", store=store, send=[], total_rows=est["rows"])
    if run.status != "FINALIZING":
        return  # cancelled meanwhile: the cancel finishes it
    outcome = "SUCCEEDED"
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=outcome))]
    await store.move_run(run, outcome, summary={"dry_run": True, "estimate": est}, send=sent)
    await deliver(sent, queues=queues, store=store)
    log.info("dry_run_estimated", rows=est["rows"], jobs=est["jobs"], planned_usd=est["planned_usd"])


def _staged_by_parent(run: Run, settings) -> bool:
    """An evaluation's child reads what its parent staged under its own prefix in the work bucket (the
    dataset, or a judge dataset)."""
    return run.parent_run_id is not None and run.input_uri.startswith(layout.run_prefix(settings, run.parent_run_id) + "/")


async def _start_jobs(run: Run, staged: Staged, *, ports: StartPorts) -> None:
    store, queues = ports.store, ports.queues
    latency = await _on_demand_latency(run, staged, ports=ports) if run.spec.deadline else None
    await store.put_new_jobs(staged.jobs)
    # The run's move and its jobs' SubmitJobs are one write (the outbox): a crash after it leaves
    # the messages for the watchdog to send, never jobs PENDING for ever.
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key)) for job in staged.jobs]
    run = await move_unless_cancelled(run, "RUNNING", store=store, send=sent, total_rows=staged.total_rows,
                                      jobs_total=len(staged.jobs), cached_records=staged.cached_records,
                                      deduplicated_records=staged.deduplicated_records, on_demand_latency_s=latency)
    crash_point("preprocess.after_jobs_recorded")
    await deliver(sent, queues=queues, store=store)
    log.info("run_started", rows=staged.total_rows, jobs=len(staged.jobs), cached=staged.cached_records)


async def _on_demand_latency(run: Run, staged: Staged, *, ports: StartPorts) -> float | None:
    """One on-demand call's latency, measured with the run's first record, for a run with a deadline:
    poll plans its batch cutoff from it. The answer is not kept (one request's cost); None if it failed."""
    def first_record() -> dict | None:
        line = next(iter(ports.objects.lines(staged.jobs[0].chunk_uri)), None)
        return orjson.loads(line) if line else None

    record = await asyncio.to_thread(first_record)
    if record is None:
        return None
    started = time.monotonic()
    try:
        await ports.runtime.invoke(run.spec.model_id, record["modelInput"])
    except QuarryError as exc:
        log.info("latency_probe_failed", reason=str(exc))
        return None
    latency = round(time.monotonic() - started, 3)
    log.info("on_demand_latency_measured", latency_s=latency)
    return latency


async def _run_on_demand(run: Run, staged: Staged, *, ports: StartPorts) -> None:
    """Fewer rows than a job's minimum (or a model Bedrock runs no batch jobs for): call InvokeModel
    for each, as a job's output would be. Rows answered from the cache need no call at all."""
    store, queues, settings = ports.store, ports.queues, ports.settings
    # Streamed: the records are read from S3 a window at a time and the answers spooled to a local
    # file, so a provisioned model's run of any size holds one window in memory, never the run.
    Path(settings.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=settings.workdir, prefix=f"ondemand-{run.run_id}-", suffix=".jsonl") as out:
        sent_records = await invoke_stream(staged.on_demand_records, model_id=run.spec.model_id, runtime=ports.runtime,
                                           concurrency=settings.on_demand_concurrency, out=out)
        out.flush()
        await asyncio.to_thread(ports.objects.upload_file, out.name, layout.ondemand_uri(settings, run.run_id, 0))
    sent = [Outgoing("postprocess", CollectRun(run_id=run.run_id))]
    await move_unless_cancelled(run, "FINALIZING", store=store, send=sent, total_rows=staged.total_rows,
                                on_demand=True, on_demand_records=sent_records, cached_records=staged.cached_records,
                                deduplicated_records=staged.deduplicated_records)
    await deliver(sent, queues=queues, store=store)
    log.info("run_ran_on_demand", rows=staged.total_rows, cached=staged.cached_records)
