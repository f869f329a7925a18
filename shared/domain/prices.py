"""Bedrock's token prices: one table, one row per model id, read by every cost Quarry states (a run's
summary, a dry run's estimate, a budget check, an evaluation's costs).

USD per 1,000 tokens in us-east-1, on demand and batch, input and output. The figures are those
aws.amazon.com/bedrock/pricing published as of PRICES_TAKEN; batch is half of on demand for every
model listed (BEDROCK.md). They have not been re-checked since (the pricing page cannot be reached
from the development machines): check the page before quoting a figure, and edit the row and the
date together. A model without a row has no known price: costs say "unknown", never 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.domain.bodies import _PROFILE_PREFIX

PRICES_TAKEN = "2024-12-01"
PRICES_SOURCE = "https://aws.amazon.com/bedrock/pricing/ (us-east-1)"

Mode = Literal["batch", "on_demand"]


@dataclass(frozen=True)
class Price:
    """USD per 1,000 tokens."""

    on_demand_in: float
    on_demand_out: float
    batch_in: float
    batch_out: float

    def cost(self, input_tokens: int, output_tokens: int, mode: Mode) -> float:
        rate_in, rate_out = ((self.batch_in, self.batch_out) if mode == "batch"
                             else (self.on_demand_in, self.on_demand_out))
        return (input_tokens * rate_in + output_tokens * rate_out) / 1000


def _row(on_demand_in: float, on_demand_out: float) -> Price:
    return Price(on_demand_in, on_demand_out, on_demand_in * BATCH_DISCOUNT, on_demand_out * BATCH_DISCOUNT)


BATCH_DISCOUNT = 0.5

PRICES: dict[str, Price] = {
    "anthropic.claude-3-haiku-20240307-v1:0": _row(0.00025, 0.00125),
    "anthropic.claude-3-5-haiku-20241022-v1:0": _row(0.0008, 0.004),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": _row(0.003, 0.015),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": _row(0.003, 0.015),
    "amazon.titan-text-lite-v1": _row(0.00015, 0.0002),
    "amazon.titan-text-express-v1": _row(0.0002, 0.0006),
    "amazon.titan-embed-text-v2:0": _row(0.00002, 0.0),
    "amazon.nova-micro-v1:0": _row(0.000035, 0.00014),
    "amazon.nova-lite-v1:0": _row(0.00006, 0.00024),
    "amazon.nova-pro-v1:0": _row(0.0008, 0.0032),
    "meta.llama3-1-8b-instruct-v1:0": _row(0.00022, 0.00022),
    "meta.llama3-1-70b-instruct-v1:0": _row(0.00072, 0.00072),
    "mistral.mistral-7b-instruct-v0:2": _row(0.00015, 0.0002),
    "mistral.mixtral-8x7b-instruct-v0:1": _row(0.00045, 0.0007),
    "cohere.command-text-v14": _row(0.0015, 0.002),
    "cohere.command-light-text-v14": _row(0.0003, 0.0006),
}


def price_of(model_id: str) -> Price | None:
    """The model's row: by its id, foundation-model ARN or inference profile (`us.`...); None if unknown."""
    bare = model_id.strip().rsplit("/", 1)[-1] if model_id.startswith("arn:") else model_id.strip()
    return PRICES.get(_PROFILE_PREFIX.sub("", bare))


def cost_usd(model_id: str, input_tokens: int, output_tokens: int, mode: Mode) -> float | None:
    """What the tokens cost at the model's batch or on-demand price; None for a model without a price."""
    price = price_of(model_id)
    return None if price is None else round(price.cost(input_tokens, output_tokens, mode), 6)
