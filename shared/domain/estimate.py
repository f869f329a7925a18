"""What a run will cost, known before anything is spent: a dry run's answer and the budget check.

Counted from the staged input: rows, jobs, the records each way (batch jobs, on demand), those the
response cache answers and those that repeat another row's request (neither is paid for). Input
tokens are estimated at 4 bytes of request body a token (the rule the local fast engine uses; real
tokenizers differ by tens of percent); output tokens are max_tokens per record sent, an upper bound.
Prices come from shared/domain/prices.py.
"""
from __future__ import annotations

import math
from typing import Any

from shared.domain.prices import PRICES_TAKEN, Mode, cost_usd

BYTES_PER_TOKEN = 4
# A spool line's bytes around its body: `{"recordId":"0000000042","modelInput":` and `}\n`.
RECORD_WRAPPER_BYTES = 40


def input_tokens_of(records: int, record_bytes: int) -> int:
    """Estimated input tokens of `records` spool lines of `record_bytes` bytes in all."""
    return math.ceil(max(record_bytes - records * RECORD_WRAPPER_BYTES, 0) / BYTES_PER_TOKEN)


def estimate(*, model_id: str, rows: int, jobs: int, job_records: int, job_bytes: int, on_demand_records: int,
             on_demand_bytes: int, cached_records: int, deduplicated_records: int, max_tokens: int,
             embeddings: bool) -> dict[str, Any]:
    """The estimate as it goes into a summary, an email and the CLI (JSON-ready)."""
    job_in = input_tokens_of(job_records, job_bytes)
    od_in = input_tokens_of(on_demand_records, on_demand_bytes)
    per_record_out = 0 if embeddings else max_tokens
    job_out, od_out = job_records * per_record_out, on_demand_records * per_record_out

    def at(mode: Mode, tokens_in: int, tokens_out: int) -> float | None:
        return cost_usd(model_id, tokens_in, tokens_out, mode)

    all_batch = at("batch", job_in + od_in, job_out + od_out)
    all_on_demand = at("on_demand", job_in + od_in, job_out + od_out)
    jobs_part, od_part = at("batch", job_in, job_out), at("on_demand", od_in, od_out)
    planned = None if jobs_part is None or od_part is None else round(jobs_part + od_part, 6)
    return {
        "model_id": model_id, "rows": rows, "jobs": jobs, "job_records": job_records,
        "on_demand_records": on_demand_records, "cached_records": cached_records,
        "deduplicated_records": deduplicated_records, "input_tokens": job_in + od_in,
        "output_tokens_max": job_out + od_out, "batch_usd": all_batch, "on_demand_usd": all_on_demand,
        "planned_usd": planned, "prices_taken": PRICES_TAKEN,
    }


def over_budget(est: dict[str, Any], budget_usd: float | None) -> bool:
    """Whether the plan's cost (output at its upper bound) exceeds the budget. A model without a known
    price cannot be held to a budget, so it is over any budget rather than let through unchecked."""
    if budget_usd is None:
        return False
    return est["planned_usd"] is None or est["planned_usd"] > budget_usd


def describe(est: dict[str, Any]) -> list[str]:
    """The estimate in lines of plain text (email, CLI)."""
    def usd(value: float | None) -> str:
        return "unknown (no price for this model)" if value is None else f"${value:,.4f}"

    skipped = []
    if est["cached_records"]:
        skipped.append(f"{est['cached_records']:,} from the response cache")
    if est["deduplicated_records"]:
        skipped.append(f"{est['deduplicated_records']:,} repeating another row's request")
    return [
        f"Rows:         {est['rows']:,}" + (f" ({', '.join(skipped)}: not sent)" if skipped else ""),
        f"Jobs:         {est['jobs']} ({est['job_records']:,} records in batch jobs, "
        f"{est['on_demand_records']:,} on demand)",
        f"Tokens:       ~{est['input_tokens']:,} in (estimated), at most {est['output_tokens_max']:,} out (max_tokens)",
        f"At batch:     {usd(est['batch_usd'])}",
        f"On demand:    {usd(est['on_demand_usd'])}",
        f"As planned:   {usd(est['planned_usd'])} (jobs at batch prices, the rest on demand; "
        f"prices of {est['prices_taken']})",
    ]
