"""The customization spec: what a `customize` run fine-tunes, where it runs the result, how it
decides to keep it, and what it may spend; and Bedrock's per-family tables it is checked against.

One pydantic model, validated the same way whatever started the run (an S3 drop-in under
`customizations/`, a `Quarry Customization Requested` event, `quarry customize`). An error names
the field path and what is allowed.

The hyperparameter tables mirror the local Bedrock's (infra/local_bedrock/hyperparameters.py),
which mirrors Bedrock's: shared/ never imports infra/ at run time (workers ship without it), so the
table is kept here too, and tests/unit/test_customization_spec.py fails if the two ever differ.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.domain.written_config import WrittenConfig, canonical_hash, parse_written

CustomizationType = Literal["FINE_TUNING", "CONTINUED_PRE_TRAINING"]
_NAME = re.compile(r"^[A-Za-z0-9](-*[A-Za-z0-9+\-.])*$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_S3 = r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/.+"


# --- Bedrock's tables, per base-model family -------------------------------------------------------------
@dataclass(frozen=True)
class HyperParameter:
    name: str
    kind: Literal["integer", "float"]
    minimum: float
    maximum: float
    default: str


def _int(name: str, low: int, high: int, default: int) -> HyperParameter:
    return HyperParameter(name, "integer", low, high, str(default))


def _float(name: str, low: float, high: float, default: str) -> HyperParameter:
    return HyperParameter(name, "float", low, high, default)


HYPERPARAMETERS: dict[str, tuple[HyperParameter, ...]] = {
    "titan-text": (_int("epochCount", 1, 10, 5), _int("batchSize", 1, 64, 1),
                   _float("learningRate", 0.0, 1.0, "0.00001"), _int("learningRateWarmupSteps", 0, 250, 5)),
    "cohere": (_int("epochCount", 1, 100, 1), _int("batchSize", 8, 32, 8), _float("learningRate", 5e-6, 0.1, "0.00001"),
               _float("earlyStoppingThreshold", 0.0, 0.1, "0.01"), _int("earlyStoppingPatience", 1, 10, 6),
               _int("evalPercentage", 5, 50, 20)),
    "llama": (_int("epochCount", 1, 10, 5), _int("batchSize", 1, 1, 1), _float("learningRate", 5e-6, 0.1, "0.0001")),
    "nova": (_int("epochCount", 1, 5, 2), _float("learningRate", 1e-6, 1e-4, "0.00001"),
             _int("learningRateWarmupSteps", 0, 100, 10)),
}


@dataclass(frozen=True)
class FamilyLimits:
    """What Bedrock accepts for one family's customization data (../shared/BEDROCK.md)."""

    types: tuple[str, ...]
    max_record_tokens: int  # prompt and completion together
    max_completion_tokens: int | None = None
    max_fine_tuning_records: int = 10_000
    max_pre_training_records: int = 100_000
    max_validation_records: int = 1_000
    min_training_records: int = 8


LIMITS: dict[str, FamilyLimits] = {
    "titan-text": FamilyLimits(("FINE_TUNING", "CONTINUED_PRE_TRAINING"), 4_096),
    "cohere": FamilyLimits(("FINE_TUNING",), 6_144, max_completion_tokens=2_048),
    "llama": FamilyLimits(("FINE_TUNING",), 16_000),
    "nova": FamilyLimits(("FINE_TUNING",), 32_000),
}

# The foundation models Quarry can customize, and their family (model id prefix -> family).
_FAMILY_PREFIXES = (("amazon.titan-text-", "titan-text"), ("cohere.command", "cohere"), ("meta.llama3", "llama"),
                    ("amazon.nova-", "nova"))


@dataclass(frozen=True)
class Prices:
    """USD: training per 1,000 tokens (times epochs), storage per custom model-month, and one
    provisioned model unit per hour without commitment. From the AWS pricing page as published in
    2024 (training, storage, and PT where AWS lists one); the PT figures AWS does not publish are
    estimates from the nearest published model, as in infra/local_bedrock/catalogue.py. Quarry
    uses them to refuse a run over its budget, never to bill: check the pricing page."""

    training_per_1k: float
    storage_month: float
    pt_hour: float


PRICES: dict[str, Prices] = {
    "amazon.titan-text-lite-v1": Prices(0.0004, 1.95, 7.10),
    "amazon.titan-text-express-v1": Prices(0.008, 1.95, 20.50),
    "amazon.nova-micro-v1:0": Prices(0.001, 1.95, 14.50),
    "amazon.nova-lite-v1:0": Prices(0.002, 1.95, 20.50),
    "amazon.nova-pro-v1:0": Prices(0.008, 1.95, 49.50),
    "meta.llama3-1-8b-instruct-v1:0": Prices(0.00149, 1.95, 24.00),
    "meta.llama3-1-70b-instruct-v1:0": Prices(0.00799, 1.95, 24.00),
    "cohere.command-text-v14": Prices(0.004, 1.95, 49.50),
    "cohere.command-light-text-v14": Prices(0.001, 1.95, 8.56),
}
# Custom model deployments (on-demand inference of a custom model) exist for these bases only.
DEPLOYABLE = frozenset({"amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0"})


def customization_family(model_id: str) -> str | None:
    """The customization family of a base model id (or ARN); None if Quarry cannot customize it."""
    bare = model_id.rsplit("/", 1)[-1]
    return next((family for prefix, family in _FAMILY_PREFIXES if bare.startswith(prefix)), None)


def resolve_hyperparameters(family: str, given: dict[str, str]) -> tuple[dict[str, str], list[str], list[str]]:
    """(every hyperparameter with the defaults filled in, the names defaulted, the problems)."""
    table = {p.name: p for p in HYPERPARAMETERS[family]}
    problems = [f"hyperparameters.{name}: not a hyperparameter of the {family} family; it takes "
                f"{', '.join(table)}" for name in sorted(set(given) - set(table))]
    resolved: dict[str, str] = {}
    for name, p in table.items():
        if name not in given:
            resolved[name] = p.default
            continue
        raw = given[name]
        try:
            number = int(raw) if p.kind == "integer" else float(raw)
        except ValueError:
            problems.append(f"hyperparameters.{name}: {raw!r} is not a valid {p.kind}")
            continue
        if not math.isfinite(number) or not p.minimum <= number <= p.maximum:
            problems.append(f"hyperparameters.{name}: {raw} is out of range; it must be between {p.minimum:g} and "
                            f"{p.maximum:g} (default {p.default})")
            continue
        resolved[name] = raw
    return resolved, [name for name in table if name not in given], problems


# --- the spec -----------------------------------------------------------------------------------------
class HostingSpec(WrittenConfig):
    """Where the custom model runs for the gate (and after, if kept)."""

    type: Literal["provisioned", "deployment", "none"] = "provisioned"
    model_units: int = Field(1, ge=1, le=100, description="model units of provisioned throughput (no commitment)")


class GateSpec(WrittenConfig):
    """The fair comparison that decides whether the custom model is kept: both models on held-out
    data, with identical deterministic decoding."""

    data: str = Field(pattern=_S3, max_length=1100, description="s3:// JSONL of prompt/completion records, "
                                                                  "none of them in the training or validation data")
    metrics: list[str] = Field(default_factory=lambda: ["rougeL"], min_length=1)
    primary: str | None = Field(None, description="the metric that decides (default: the first)")
    min_effect: float = Field(0.0, ge=0, description="the custom model must beat its base by more than this, "
                                                      "with the whole 95% interval of the difference above it")
    max_tokens: int = Field(256, ge=1, le=8192, description="decoding: enough output tokens; temperature is always 0")
    limit: int | None = Field(None, ge=1, description="use only the first N held-out records")

    @model_validator(mode="after")
    def _known_metrics(self) -> "GateSpec":
        from shared.domain.evaluation import metric_catalogue  # noqa: PLC0415 - the scoring library is heavy

        known = metric_catalogue()
        unknown = [m for m in self.metrics if m not in known]
        if unknown:
            raise ValueError(f"metrics: unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        if self.primary is not None and self.primary not in self.metrics:
            raise ValueError(f"primary: {self.primary!r} is not one of the gate's metrics ({', '.join(self.metrics)})")
        return self

    @property
    def primary_metric(self) -> str:
        return self.primary or self.metrics[0]


class CustomizationSpec(WrittenConfig):
    """A customization: a base model, data, hyperparameters, hosting, the gate, and a budget."""

    name: str | None = Field(None, max_length=100)
    base_model: str = Field(min_length=1, description="the foundation model id to customize")
    type: CustomizationType = "FINE_TUNING"
    training_data: str = Field(pattern=_S3, max_length=1100)
    validation_data: str | None = Field(None, pattern=_S3, max_length=1100)
    hyperparameters: dict[str, str] = Field(default_factory=dict, description="Bedrock's names; values are strings")
    custom_model_name: str = Field(min_length=1, max_length=63)
    hosting: HostingSpec = Field(default_factory=HostingSpec)
    gate: GateSpec | None = None
    budget_usd: float = Field(gt=0, description="the most the training, a month's storage and the gate's hosting "
                                                "may cost, estimated before anything is spent")
    recipients: list[str] = Field(default_factory=list)
    registry: str | None = Field(None, description="the registry group the custom model is recorded in")

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        return value.upper().replace("-", "_") if isinstance(value, str) else value

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        # Bedrock takes strings; a number written in YAML is the same value, so it is accepted as one.
        if isinstance(value, dict):
            return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, (int, float)) else v
                    for k, v in value.items()}
        return value

    @field_validator("base_model")
    @classmethod
    def _customizable(cls, model_id: str) -> str:
        family = customization_family(model_id)
        if family is None:
            raise ValueError(f"{model_id!r} cannot be customized by Quarry; base models of the families "
                             f"{', '.join(HYPERPARAMETERS)}: {', '.join(sorted(PRICES))}")
        return model_id.rsplit("/", 1)[-1]

    @field_validator("custom_model_name")
    @classmethod
    def _model_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("must start with a letter or digit and hold only letters, digits, '-', '+' and '.'")
        return name

    @field_validator("registry")
    @classmethod
    def _group(cls, group: str | None) -> str | None:
        if group is not None and not _GROUP.match(group):
            raise ValueError("must be 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return group

    @field_validator("recipients")
    @classmethod
    def _emails(cls, recipients: list[str]) -> list[str]:
        bad = [r for r in recipients if "@" not in r or " " in r.strip()]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return recipients

    @model_validator(mode="after")
    def _consistent(self) -> "CustomizationSpec":
        family = self.family
        if self.type not in LIMITS[family].types:
            raise ValueError(f"type: {self.type} is not offered for {self.base_model}; it takes "
                             f"{', '.join(LIMITS[family].types)}")
        if self.hosting.type == "deployment" and self.base_model not in DEPLOYABLE:
            raise ValueError(f"hosting.type: custom models of {self.base_model} cannot be deployed on demand (only "
                             f"{', '.join(sorted(DEPLOYABLE))}); use provisioned")
        if self.gate is not None and self.hosting.type == "none":
            raise ValueError("gate: a custom model is invoked only through its hosting; give hosting.type "
                             "provisioned or deployment, or drop the gate")
        return self

    @property
    def family(self) -> str:
        family = customization_family(self.base_model)
        assert family is not None
        return family

    def spec_hash(self) -> str:
        return canonical_hash(self)


def parse_customization(raw: bytes | str | dict[str, Any], *, where: str) -> CustomizationSpec:
    """A validated spec from YAML or JSON text (or a parsed mapping); InvalidRunSpec naming `where`
    and each bad field's path otherwise."""
    return parse_written(CustomizationSpec, raw, where=where, what="customization spec",
                         fields="base_model, training_data, custom_model_name and budget_usd")
