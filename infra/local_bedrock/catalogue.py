"""The foundation models the local Bedrock serves, and how a model identifier resolves to one."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Family = Literal["anthropic", "titan-text", "titan-embed", "nova", "llama", "mistral", "cohere"]
Lifecycle = Literal["ACTIVE", "LEGACY"]


@dataclass(frozen=True)
class FoundationModel:
    model_id: str
    name: str  # Bedrock caps modelName at 20 characters
    provider: str
    family: Family
    customizations: tuple[str, ...] = ()

    @property
    def is_embedding(self) -> bool:
        return self.family == "titan-embed"

    @property
    def output_modality(self) -> str:
        return "EMBEDDING" if self.is_embedding else "TEXT"

    def arn(self, region: str) -> str:
        return f"arn:aws:bedrock:{region}::foundation-model/{self.model_id}"

    @property
    def lifecycle(self) -> Lifecycle:
        return "LEGACY" if self.model_id in LEGACY else "ACTIVE"

    @property
    def provisioned_price(self) -> "ProvisionedPrice | None":
        """The hourly price of one model unit, or None where Bedrock sells no Provisioned Throughput."""
        return PROVISIONED_PRICES.get(self.model_id)

    @property
    def provisionable(self) -> bool:
        return self.model_id in PROVISIONED_PRICES

    @property
    def custom_deployable(self) -> bool:
        """Whether custom models of this base can be deployed for on-demand inference."""
        return self.model_id in ON_DEMAND_CUSTOM_DEPLOYMENT


@dataclass(frozen=True)
class ProvisionedPrice:
    """USD per model unit per hour, by commitment term; None where that term is not sold for the
    base model (custom models of every base may be bought without commitment)."""

    no_commitment: float
    one_month: float
    six_months: float
    no_commitment_for_base: bool
    source: Literal["aws-pricing-page", "estimate"]

    def hourly(self, commitment: str | None) -> float:
        return {None: self.no_commitment, "OneMonth": self.one_month, "SixMonths": self.six_months}[commitment]


MODELS: tuple[FoundationModel, ...] = (
    FoundationModel("anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku", "Anthropic", "anthropic"),
    FoundationModel("anthropic.claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku", "Anthropic", "anthropic"),
    FoundationModel("anthropic.claude-3-5-sonnet-20240620-v1:0", "Claude 3.5 Sonnet", "Anthropic", "anthropic"),
    FoundationModel("amazon.titan-text-lite-v1", "Titan Text Lite", "Amazon", "titan-text",
                    ("FINE_TUNING", "CONTINUED_PRE_TRAINING")),
    FoundationModel("amazon.titan-text-express-v1", "Titan Text Express", "Amazon", "titan-text",
                    ("FINE_TUNING", "CONTINUED_PRE_TRAINING")),
    FoundationModel("amazon.titan-embed-text-v2:0", "Titan Embeddings V2", "Amazon", "titan-embed"),
    FoundationModel("amazon.nova-micro-v1:0", "Nova Micro", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("amazon.nova-lite-v1:0", "Nova Lite", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("amazon.nova-pro-v1:0", "Nova Pro", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("meta.llama3-1-8b-instruct-v1:0", "Llama 3.1 8B", "Meta", "llama", ("FINE_TUNING",)),
    FoundationModel("meta.llama3-1-70b-instruct-v1:0", "Llama 3.1 70B", "Meta", "llama", ("FINE_TUNING",)),
    FoundationModel("mistral.mistral-7b-instruct-v0:2", "Mistral 7B Instruct", "Mistral AI", "mistral"),
    FoundationModel("mistral.mixtral-8x7b-instruct-v0:1", "Mixtral 8x7B", "Mistral AI", "mistral"),
    FoundationModel("cohere.command-text-v14", "Command", "Cohere", "cohere", ("FINE_TUNING",)),
    FoundationModel("cohere.command-light-text-v14", "Command Light", "Cohere", "cohere", ("FINE_TUNING",)),
)

# Bedrock's model lifecycle page lists Claude 3.5 Sonnet (20240620) as Legacy: still served, but
# ListFoundationModels reports modelLifecycle LEGACY so callers can plan the move off it.
LEGACY = frozenset({"anthropic.claude-3-5-sonnet-20240620-v1:0"})

# Provisioned Throughput, USD per model unit per hour in us-east-1 (no commitment / 1 month / 6 months).
# Which models sell PT, and whether without commitment for the base model: the user guide's
# "Supported Region and models for Provisioned Throughput" (pt-supported.html), read 2026-11-30.
# Prices marked "aws-pricing-page" are the figures aws.amazon.com/bedrock/pricing published in 2024
# for those models (not re-checked on 2026-11-30: the page could not be reached from here); AWS
# publishes no per-MU figure for the others ("contact your account manager"), so theirs are
# estimates taken from the nearest published model of a similar size. Quarry uses them to account
# for a PT's cost, never to bill: check the pricing page before quoting one.
PROVISIONED_PRICES: dict[str, ProvisionedPrice] = {
    "amazon.titan-text-lite-v1": ProvisionedPrice(7.10, 6.40, 5.10, True, "aws-pricing-page"),
    "amazon.titan-text-express-v1": ProvisionedPrice(20.50, 18.40, 14.80, True, "aws-pricing-page"),
    "amazon.titan-embed-text-v2:0": ProvisionedPrice(7.10, 6.40, 5.10, True, "estimate"),
    "amazon.nova-micro-v1:0": ProvisionedPrice(14.50, 13.00, 10.40, True, "estimate"),
    "amazon.nova-lite-v1:0": ProvisionedPrice(20.50, 18.40, 14.80, True, "estimate"),
    "amazon.nova-pro-v1:0": ProvisionedPrice(49.50, 39.60, 23.77, True, "estimate"),
    "anthropic.claude-3-haiku-20240307-v1:0": ProvisionedPrice(44.00, 39.60, 22.00, False, "estimate"),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": ProvisionedPrice(70.00, 63.00, 35.00, False, "estimate"),
    "meta.llama3-1-8b-instruct-v1:0": ProvisionedPrice(24.00, 21.18, 13.08, False, "estimate"),
    "meta.llama3-1-70b-instruct-v1:0": ProvisionedPrice(24.00, 21.18, 13.08, False, "estimate"),
    "cohere.command-text-v14": ProvisionedPrice(49.50, 39.60, 23.77, True, "aws-pricing-page"),
    "cohere.command-light-text-v14": ProvisionedPrice(8.56, 6.85, 4.11, True, "aws-pricing-page"),
}

# Custom model deployments (on-demand inference of a custom model): the user guide's "Deploy a
# custom model for on-demand inference" lists Amazon Nova Micro, Lite and Pro as the supported
# base models (Nova Canvas too, which this service does not serve).
ON_DEMAND_CUSTOM_DEPLOYMENT = frozenset({"amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0"})

_BY_ID = {model.model_id: model for model in MODELS}
# Cross-region inference profiles prefix the model id with a geography: us., eu., apac., global.
_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|us-gov|global)\.")
_FOUNDATION_ARN = re.compile(r"^arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]+:(?:[0-9]{12})?:(?:foundation-model|inference-profile)/(.+)$")


# Provisioned Throughput names a base model by a contextual variant: its id plus a context length,
# e.g. amazon.nova-lite-v1:0:24k or amazon.titan-text-express-v1:0:8k.
_CONTEXT_VARIANT = re.compile(r"^(?P<base>.+?)(?::[0-9]+)?:[0-9]+k$")


class UnknownModel(LookupError):
    """The identifier names no model this service serves."""


def resolve(identifier: str) -> FoundationModel:
    """The model behind an id, a foundation-model ARN or an inference-profile id/ARN."""
    model_id = identifier
    match = _FOUNDATION_ARN.match(model_id)
    if match:
        model_id = match.group(1)
    model_id = _PROFILE_PREFIX.sub("", model_id)
    try:
        return _BY_ID[model_id]
    except KeyError:
        raise UnknownModel(identifier) from None



def resolve_provisionable(identifier: str) -> FoundationModel:
    """The model behind an id, ARN or contextual variant (`amazon.nova-lite-v1:0:24k`), as
    CreateProvisionedModelThroughput accepts them."""
    try:
        return resolve(identifier)
    except UnknownModel:
        pass
    model_id = identifier.rsplit("/", 1)[-1]
    match = _CONTEXT_VARIANT.match(model_id)
    if match:
        for candidate in (match.group("base"), model_id.rsplit(":", 1)[0]):
            if candidate in _BY_ID:
                return _BY_ID[candidate]
    raise UnknownModel(identifier)
