"""Customization hyperparameters per model family, checked as Bedrock checks them at create.

Bedrock takes hyperparameters as a map of strings. It rejects a name the base model does not
know and a value that is not a number of the right kind or is out of the model's range, with a
ValidationException from CreateModelCustomizationJob, and fills in the defaults it does not get
(GetModelCustomizationJob echoes the full set). Ranges and defaults are Bedrock's
(../shared/BEDROCK.md and the Bedrock user guide's per-model tables).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.errors import validation


@dataclass(frozen=True)
class HyperParameter:
    name: str
    kind: Literal["integer", "float"]
    minimum: float
    maximum: float
    default: str

    def check(self, raw: str, model_id: str) -> str:
        """The value as given, once it is a number of this kind within range."""
        try:
            number = int(raw) if self.kind == "integer" else float(raw)
        except ValueError:
            raise validation(f"The value '{raw}' of hyperparameter {self.name} is not a valid {self.kind} "
                             f"for the base model {model_id}. Hyperparameter values are strings holding a number.") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise validation(f"The value '{raw}' of hyperparameter {self.name} is not a finite number.")
        if not self.minimum <= number <= self.maximum:
            raise validation(f"The value {raw} of hyperparameter {self.name} is out of range for the base model "
                             f"{model_id}: it must be between {_show(self.minimum)} and {_show(self.maximum)}.")
        return raw


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() and abs(number) >= 1 else f"{number:g}"


def _int(name: str, low: int, high: int, default: int) -> HyperParameter:
    return HyperParameter(name, "integer", low, high, str(default))


def _float(name: str, low: float, high: float, default: str) -> HyperParameter:
    return HyperParameter(name, "float", low, high, default)


# Per family: the hyperparameters a base model of that family accepts.
TABLES: dict[str, tuple[HyperParameter, ...]] = {
    "titan-text": (
        _int("epochCount", 1, 10, 5),
        _int("batchSize", 1, 64, 1),
        _float("learningRate", 0.0, 1.0, "0.00001"),
        _int("learningRateWarmupSteps", 0, 250, 5),
    ),
    "cohere": (
        _int("epochCount", 1, 100, 1),
        _int("batchSize", 8, 32, 8),
        _float("learningRate", 5e-6, 0.1, "0.00001"),
        _float("earlyStoppingThreshold", 0.0, 0.1, "0.01"),
        _int("earlyStoppingPatience", 1, 10, 6),
        _int("evalPercentage", 5, 50, 20),
    ),
    "llama": (
        _int("epochCount", 1, 10, 5),
        _int("batchSize", 1, 1, 1),
        _float("learningRate", 5e-6, 0.1, "0.0001"),
    ),
    "nova": (
        _int("epochCount", 1, 5, 2),
        _float("learningRate", 1e-6, 1e-4, "0.00001"),
        _int("learningRateWarmupSteps", 0, 100, 10),
    ),
}


@dataclass(frozen=True)
class TrainingArguments:
    """What a trainer needs from the hyperparameters; a family without a batchSize trains one at a time."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int


def table(model: FoundationModel) -> tuple[HyperParameter, ...]:
    try:
        return TABLES[model.family]
    except KeyError:
        raise validation(f"The base model {model.model_id} does not support customization.") from None


def resolve(model: FoundationModel, given: dict[str, str] | None) -> dict[str, str]:
    """Every hyperparameter of the model's family: the given values, checked, and the defaults."""
    parameters = {parameter.name: parameter for parameter in table(model)}
    given = given or {}
    unknown = sorted(set(given) - set(parameters))
    if unknown:
        raise validation(f"The hyperparameter {', '.join(unknown)} is not supported for the base model "
                         f"{model.model_id}. Supported hyperparameters: {', '.join(parameters)}.")
    return {name: parameter.check(given[name], model.model_id) if name in given else parameter.default
            for name, parameter in parameters.items()}


def training_arguments(resolved: dict[str, str]) -> TrainingArguments:
    """The trainer's arguments from a resolved set of hyperparameters."""
    return TrainingArguments(
        epochs=int(resolved["epochCount"]),
        batch_size=int(resolved.get("batchSize", "1")),
        learning_rate=float(resolved["learningRate"]),
        warmup_steps=int(resolved.get("learningRateWarmupSteps", "0")),
    )
