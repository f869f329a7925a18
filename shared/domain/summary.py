"""A finished run's summary: counts, tokens, estimated cost at batch prices, durations, top errors."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from shared.domain.prices import BATCH_DISCOUNT, cost_usd

__all__ = ["BATCH_DISCOUNT", "batch_cost_usd", "run_summary"]


def batch_cost_usd(model_id: str, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated cost at batch prices (shared/domain/prices.py), or None for a model without a known price."""
    return cost_usd(model_id, input_tokens, output_tokens, "batch")


def run_summary(*, model_id: str, rows: int, succeeded: int, failed: int, input_tokens: int, output_tokens: int,
                errors: Counter[str], started: dt.datetime, ended: dt.datetime, jobs: int, retried_jobs: int,
                on_demand_records: int, result_uri: str) -> dict[str, Any]:
    return {
        "rows": rows,
        "succeeded": succeeded,
        "failed": failed,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "estimated_cost_usd": batch_cost_usd(model_id, input_tokens, output_tokens),
        "jobs": jobs,
        "retried_jobs": retried_jobs,
        "on_demand_records": on_demand_records,
        "duration_s": round((ended - started).total_seconds(), 1),
        "top_errors": errors.most_common(5),
        "result_uri": result_uri,
    }
