"""The fast trainer: a customization job's training on a clock, with no ML packages.

Steps advance every `seconds_per_step` (ceil(records / batchSize) steps an epoch, as a real
trainer takes them); the loss falls from about 2.4 towards about 0.4 on an exponential curve with
noise seeded by the job id (so a job's curve is reproducible), or rises when the job is told to
diverge. The "weights" it writes are the training records themselves (FAST_WEIGHTS in the output
directory), which FastCustomTextEngine answers from: a custom model really knows its data.

Continued pre-training records have no prompt and completion; the fast trainer splits each text
in two, so a prompt that is close to the start of a text is answered with the rest of it.
"""
from __future__ import annotations

import asyncio
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, AsyncIterator

import orjson

from infra.local_bedrock.training import TrainingDone, TrainingEvent, TrainingSpec, TrainingStep, ValidationResult

FAST_WEIGHTS = "fast_weights.json"
WEIGHTS_FORMAT = "quarry-fast-custom/1"


class FastTrainer:
    name = "fast"

    def __init__(self, *, seconds_per_step: float = 0.0) -> None:
        self._seconds_per_step = seconds_per_step

    async def train(self, spec: TrainingSpec) -> AsyncIterator[TrainingEvent]:
        pairs = training_pairs(spec.train_path, spec.customization_type)
        steps_per_epoch = max(1, math.ceil(len(pairs) / max(spec.batch_size, 1)))
        total = steps_per_epoch * spec.epochs
        curve = _LossCurve(spec.job_id, diverge=spec.faults.diverge)
        loss = curve.start
        for step in range(total):
            await asyncio.sleep(self._seconds_per_step)
            loss = curve.at((step + 1) / total)
            epoch = step // steps_per_epoch + 1
            yield TrainingStep(step_number=step, epoch_number=epoch, training_loss=loss,
                               perplexity=_perplexity(loss), total_steps=total)
            if spec.validation_path is not None and (step + 1) % steps_per_epoch == 0:
                validation_loss = curve.validation(loss)
                yield ValidationResult(step_number=step, epoch_number=epoch, validation_loss=validation_loss,
                                       perplexity=_perplexity(validation_loss))
        write_weights(spec.output_dir, {
            "format": WEIGHTS_FORMAT,
            "customization_type": spec.customization_type,
            "base_model_id": spec.base_model_id,
            "learn_nothing": spec.faults.learn_nothing,
            "pairs": pairs,
        })
        validation_loss = curve.validation(loss) if spec.validation_path is not None else None
        yield TrainingDone(training_loss=loss, validation_loss=validation_loss)


class _LossCurve:
    """A loss that decays exponentially towards a floor (or grows, diverging), with seeded noise."""

    def __init__(self, seed: str, *, diverge: bool) -> None:
        self._rng = random.Random(seed)
        self.start = 2.2 + self._rng.uniform(0.0, 0.4)
        self._floor = 0.3 + self._rng.uniform(0.0, 0.2)
        self._diverge = diverge

    def at(self, progress: float) -> float:
        if self._diverge:
            base = self.start * math.exp(2.5 * progress)
        else:
            base = self._floor + (self.start - self._floor) * math.exp(-4.0 * progress)
        return round(base * (1.0 + self._rng.gauss(0.0, 0.02)), 6)

    def validation(self, training_loss: float) -> float:
        # Held-out data scores a little worse than the data trained on.
        return round(training_loss * (1.08 + self._rng.uniform(0.0, 0.04)), 6)


def _perplexity(loss: float) -> float:
    return round(math.exp(min(loss, 700.0)), 6)


def training_pairs(path: Path, customization_type: str) -> list[list[str]]:
    """[prompt, completion] per record of a validated JSONL file."""
    pairs: list[list[str]] = []
    with path.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            record: dict[str, Any] = orjson.loads(line)
            if customization_type == "CONTINUED_PRE_TRAINING":
                pairs.append(split_text(record["input"]))
            else:
                pairs.append([record["prompt"], record["completion"]])
    return pairs


def split_text(text: str) -> list[str]:
    """A pre-training text as [first half, second half] by words."""
    words = text.split()
    half = max(1, len(words) // 2)
    return [" ".join(words[:half]), " ".join(words[half:])]


def write_weights(output_dir: Path, weights: dict[str, Any]) -> None:
    """Write the weights file whole, atomically: a half-written file must never be served."""
    output_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_dir, prefix=".weights.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(weights))
        os.replace(tmp, output_dir / FAST_WEIGHTS)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
