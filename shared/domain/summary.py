"""A finished run's summary: counts, tokens, estimated cost at batch prices, durations, top errors."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from shared.domain.bodies import UnsupportedModelError, family_of

# On-demand USD per 1,000 input / output tokens (us-east-1 list prices); batch is half of these.
# Estimates only: a family's cheapest common model stands for the family where ids differ.
_ON_DEMAND_PER_1K: dict[str, tuple[float, float]] = {
    "anthropic.claude-3-haiku": (0.00025, 0.00125),
    "anthropic.claude-3-5-haiku": (0.0008, 0.004),
    "anthropic.claude-3-5-sonnet": (0.003, 0.015),
    "amazon.titan-text-lite": (0.00015, 0.0002),
    "amazon.titan-text-express": (0.0002, 0.0006),
    "amazon.titan-embed-text-v2": (0.00002, 0.0),
    "amazon.nova-micro": (0.000035, 0.00014),
    "amazon.nova-lite": (0.00006, 0.00024),
    "amazon.nova-pro": (0.0008, 0.0032),
    "meta.llama3-1-8b": (0.00022, 0.00022),
    "meta.llama3-1-70b": (0.00072, 0.00072),
    "mistral.mistral-7b": (0.00015, 0.0002),
    "mistral.mixtral-8x7b": (0.00045, 0.0007),
    "cohere.command-light": (0.0003, 0.0006),
    "cohere.command-text": (0.0015, 0.002),
}
BATCH_DISCOUNT = 0.5


def batch_cost_usd(model_id: str, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated cost at batch prices, or None for a model without a known price."""
    try:
        family_of(model_id)
    except UnsupportedModelError:
        return None  # a provisioned or custom model: billed by the hour, not by the token
    bare = model_id.rsplit("/", 1)[-1]
    bare = bare.split(".", 1)[1] if bare.split(".", 1)[0] in ("us", "eu", "apac", "global") else bare
    for prefix, (price_in, price_out) in _ON_DEMAND_PER_1K.items():
        if bare.startswith(prefix):
            return round((input_tokens * price_in + output_tokens * price_out) / 1000 * BATCH_DISCOUNT, 6)
    return None


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
