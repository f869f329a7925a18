"""A batch job's progress against its run's promises, looked at on every check (batch_job.check).

- Progress: when the processed count last moved (Job.progressed_at).
- Stuck: records pending and no progress for the spec's stuck_after_s (QUARRY_STUCK_AFTER_S by
  default); noted on the job (Job.stuck_since) for `quarry status` and the email.
- Deadline: at the batch cutoff (the deadline less the time the run's pending records would take
  on demand, less a margin; shared/domain/deadlines.py), or when stuck with a deadline, the job is
  stopped and marked cut short: postprocess salvages what it wrote and sends only the missing
  records on demand, merged into the one result file.
"""
from __future__ import annotations

from typing import Any

import structlog

from shared.adapters.bedrock import BatchJobs, BedrockJobState
from shared.adapters.store import RunStore
from shared.domain.deadlines import batch_cutoff, deadline_at, is_stuck
from shared.domain.runs import Job, now
from shared.errors import QuarryError
from shared.settings import Settings

log = structlog.get_logger("quarry.poll")


async def watch(job: Job, state: BedrockJobState, *, store: RunStore, bedrock: BatchJobs,
                settings: Settings) -> dict[str, Any]:
    """The job's changes from this check: progress and stuck times, and cut_short once it is stopped."""
    at = now()
    changes: dict[str, Any] = {}
    moved = state.processed != job.processed or job.progressed_at is None
    progressed_at = at if moved else job.progressed_at
    if moved:
        changes["progressed_at"] = at
    if state.status != "InProgress" or job.cut_short is not None:
        return changes
    run = await store.get_run(job.run_id)
    if run is None or run.spec is None:
        return changes
    stuck_after = run.spec.stuck_after_s or settings.stuck_after_s
    total = state.total or job.records
    stuck = is_stuck(processed=state.processed, total=total, progressed_at=progressed_at, now=at,
                     stuck_after_s=stuck_after)
    if stuck and job.stuck_since is None:
        changes["stuck_since"] = progressed_at
        log.warning("job_stuck", job_key=job.job_key, processed=state.processed, total=total,
                    since=progressed_at.isoformat())
    elif not stuck and job.stuck_since is not None and moved:
        changes["stuck_since"] = None  # moving again
    if run.spec.deadline is None:
        return changes
    why = None
    if stuck:
        why = f"stuck with {total - state.processed:,} records pending and no progress for {stuck_after} s"
    else:
        jobs = await store.list_jobs(job.run_id)
        pending = sum(max(j.records - (state.processed if j.job_key == job.job_key else j.processed), 0)
                      for j in jobs if not j.terminal)
        cutoff = batch_cutoff(deadline=deadline_at(run.spec.deadline, run.created_at), started=run.created_at,
                              pending=pending, latency_s=run.on_demand_latency_s or settings.on_demand_latency_s,
                              concurrency=settings.on_demand_concurrency, margin_s=settings.deadline_margin_s)
        if at >= cutoff.at:
            why = (f"the deadline's batch cutoff at {cutoff.at.isoformat(timespec='seconds')} ({pending:,} records "
                   f"pending, about {cutoff.on_demand_s:.0f} s on demand, {cutoff.margin_s:.0f} s margin)")
    if why is not None:
        try:
            await bedrock.stop(job.bedrock_arn)
        except QuarryError as exc:
            log.warning("cut_short_job_not_stopped", job_key=job.job_key, reason=str(exc))
            return changes  # the next check tries again
        log.info("job_cut_short", job_key=job.job_key, reason=why)
        changes["cut_short"] = why
    return changes
