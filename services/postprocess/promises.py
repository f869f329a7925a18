"""What a batch run's summary says about its promises: what it paid (batch and on demand apart), what
the cache and de-duplication saved, where rows went against a deadline, outputs checked against its
schema, and jobs that were stuck."""
from __future__ import annotations

import datetime as dt
from typing import Any

from services.postprocess.collecting import Tally
from shared.dataplane.assemble import AssembleSummary
from shared.domain.deadlines import deadline_at, stuck_jobs
from shared.domain.prices import cost_usd
from shared.domain.runs import Job, Run


def _sum(*costs: float | None) -> float | None:
    return None if any(c is None for c in costs) else round(sum(costs), 6)  # type: ignore[arg-type]


def promises_summary(run: Run, jobs: list[Job], result: AssembleSummary, tally: Tally, *,
                     ended: dt.datetime) -> dict[str, Any]:
    model_id = run.spec.model_id
    # Rows from the cache or fanned out were not paid for in this run; repeats carry no tokens.
    batch_in = max(result.input_tokens - tally.cached_in - tally.on_demand_in, 0)
    batch_out = max(result.output_tokens - tally.cached_out - tally.on_demand_out, 0)
    batch_usd = cost_usd(model_id, batch_in, batch_out, "batch")
    on_demand_usd = cost_usd(model_id, tally.on_demand_in, tally.on_demand_out, "on_demand")
    saved_in = tally.cached_in + (tally.fan_out.saved_input_tokens if tally.fan_out else 0)
    saved_out = tally.cached_out + (tally.fan_out.saved_output_tokens if tally.fan_out else 0)
    summary: dict[str, Any] = {
        "estimated_cost_usd": _sum(batch_usd, on_demand_usd),
        "batch_cost_usd": batch_usd,
        "on_demand_cost_usd": on_demand_usd,
        "cached_records": run.cached_records,
        "deduplicated_records": run.deduplicated_records,
        "saved_usd": cost_usd(model_id, saved_in, saved_out, "batch"),
    }
    if run.spec.deadline is not None:
        at = deadline_at(run.spec.deadline, run.created_at)
        sent_by_batch = max(result.rows - run.cached_records - run.deduplicated_records - run.on_demand_records, 0)
        summary["deadline"] = {
            "at": at.isoformat(timespec="seconds"), "met": ended <= at,
            "batch_rows": sent_by_batch, "on_demand_rows": run.on_demand_records,
            "batch_usd": batch_usd, "on_demand_usd": on_demand_usd,
            "cut_short": [f"job {job.name} stopped: {job.cut_short}" for job in jobs if job.cut_short],
        }
    if tally.schema is not None:
        summary["schema"] = {"valid": tally.schema.valid, "valid_after_retry": tally.schema.valid_after_retry,
                             "invalid": tally.schema.invalid}
    stuck = stuck_jobs(jobs)
    if stuck:
        summary["stuck_jobs"] = stuck
    return summary
