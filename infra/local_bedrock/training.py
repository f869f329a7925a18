"""What a customization job asks of a trainer, and what a trainer reports back.

A trainer turns a job's data and hyperparameters into a custom model's weights under
`TrainingSpec.output_dir`. It is an async iterator of progress events, so the job's runner can
write the metrics CSVs and update the job as training goes, and can stop it by closing the
iterator (`aclose()`), which must end training promptly (the real trainer kills its process).
To stop a trainer while it is waiting for its next step, the runner cancels the pending step
(CancelledError is raised inside the generator at its await) and then calls `aclose()`: a
trainer releases what it holds (a process, files) in a `finally`.

Steps are numbered from 0, as in Bedrock's step_wise_training_metrics.csv. The runner, not the
trainer, enforces the faults that end a job part-way (`fail_after_fraction`,
`stop_after_fraction`): it counts the steps reported against `TrainingStep.total_steps`. A
trainer acts on `diverge` (its loss rises) and, where it can, `learn_nothing`.

Two trainers exist, one per engine (the engine configured for the base model decides):
- `fast` (infra/local_bedrock/engines/fast_training.py): no ML packages; steps advance on a clock
  with a falling loss, and the "weights" are the training records, which the fast custom engine
  answers from, so a custom model measurably beats its base on prompts like its training data.
- `real` (infra/local_bedrock/engines/real_training.py): fine-tunes SmolLM2-135M-Instruct on CPU in
  a process of its own, writing the trained tensors under output_dir.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Literal, Protocol

CustomizationType = Literal["FINE_TUNING", "CONTINUED_PRE_TRAINING"]


@dataclass(frozen=True)
class TrainingFaults:
    """Injected misbehaviour for one job (from the control endpoint's faults)."""

    fail_after_fraction: float | None = None  # fail once this share of the steps is done
    failure_message: str | None = None
    stop_after_fraction: float | None = None  # stopped (as by StopModelCustomizationJob) at this share
    diverge: bool = False  # the loss rises instead of falling (real: a learning rate that blows up)
    learn_nothing: bool = False  # the custom model answers exactly as its base (fast engine)


@dataclass(frozen=True)
class TrainingSpec:
    """Everything a trainer needs; the data files are local JSONL copies made by the runner."""

    job_id: str
    customization_type: CustomizationType
    base_model_id: str
    train_path: Path
    validation_path: Path | None
    output_dir: Path
    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    faults: TrainingFaults = field(default_factory=TrainingFaults)


@dataclass(frozen=True)
class TrainingStep:
    """One optimizer step: a row of step_wise_training_metrics.csv."""

    step_number: int
    epoch_number: int
    training_loss: float
    perplexity: float
    total_steps: int


@dataclass(frozen=True)
class ValidationResult:
    """One evaluation on the validation data: a row of the validation metrics CSV."""

    step_number: int
    epoch_number: int
    validation_loss: float
    perplexity: float


@dataclass(frozen=True)
class TrainingDone:
    """Training finished; the weights are under the spec's output_dir."""

    training_loss: float
    validation_loss: float | None


TrainingEvent = TrainingStep | ValidationResult | TrainingDone


class TrainingFailed(Exception):
    """Training stopped with an error; its message becomes the job's failureMessage."""


class Trainer(Protocol):
    name: str

    def train(self, spec: TrainingSpec) -> AsyncIterator[TrainingEvent]:
        """Progress events ending with TrainingDone; raises TrainingFailed on an error."""
        ...
