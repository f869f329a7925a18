"""The fast trainer and the fast custom engine: a loss that falls on a clock, and a custom model
that really knows its training data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.local_bedrock.engines import TextRequest
from infra.local_bedrock.engines.fast import FastCustomTextEngine, FastTextEngine
from infra.local_bedrock.engines.fast_training import FastTrainer
from infra.local_bedrock.training import TrainingDone, TrainingFaults, TrainingSpec, TrainingStep, ValidationResult

RECORDS = [
    {"prompt": f"Summarize the meeting about budget item {i} with the finance team and the auditors.",
     "completion": f"The team approved budget item {i}."}
    for i in range(10)
]


def spec(tmp_path: Path, *, records=RECORDS, kind="FINE_TUNING", epochs=2, batch_size=3, validation=False,
         faults=TrainingFaults()) -> TrainingSpec:
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in records))
    validation_path = None
    if validation:
        validation_path = tmp_path / "validation.jsonl"
        validation_path.write_text(train.read_text())
    return TrainingSpec(job_id="abc123def456", customization_type=kind, base_model_id="amazon.titan-text-lite-v1",
                        train_path=train, validation_path=validation_path, output_dir=tmp_path / "weights",
                        epochs=epochs, batch_size=batch_size, learning_rate=1e-5, warmup_steps=0, faults=faults)


async def events_of(spec: TrainingSpec) -> list:
    return [event async for event in FastTrainer().train(spec)]


def ask(text: str) -> TextRequest:
    return TextRequest((("user", text),), max_tokens=200)


async def test_steps_are_batches_times_epochs_numbered_from_zero(tmp_path):
    events = await events_of(spec(tmp_path, epochs=2, batch_size=3))

    steps = [e for e in events if isinstance(e, TrainingStep)]
    assert [s.step_number for s in steps] == list(range(8))  # ceil(10 / 3) = 4 steps an epoch
    assert [s.epoch_number for s in steps] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert {s.total_steps for s in steps} == {8}
    assert isinstance(events[-1], TrainingDone)


async def test_the_loss_falls_and_perplexity_is_its_exponential(tmp_path):
    steps = [e for e in await events_of(spec(tmp_path, epochs=5, batch_size=1)) if isinstance(e, TrainingStep)]

    assert steps[-1].training_loss < steps[0].training_loss / 2
    assert all(abs(s.perplexity - 2.718281828 ** s.training_loss) < 1e-3 * s.perplexity for s in steps)


async def test_a_diverging_job_ends_with_a_higher_loss_than_it_started(tmp_path):
    steps = [e for e in await events_of(spec(tmp_path, faults=TrainingFaults(diverge=True))) if isinstance(e, TrainingStep)]

    assert steps[-1].training_loss > steps[0].training_loss * 2


async def test_validation_data_is_scored_once_an_epoch(tmp_path):
    events = await events_of(spec(tmp_path, epochs=3, batch_size=5, validation=True))

    results = [e for e in events if isinstance(e, ValidationResult)]
    assert [r.epoch_number for r in results] == [1, 2, 3]
    assert events[-1].validation_loss is not None


async def test_the_same_job_gives_the_same_curve(tmp_path):
    first = await events_of(spec(tmp_path / "a"))
    second = await events_of(spec(tmp_path / "b"))

    assert [e.training_loss for e in first if isinstance(e, TrainingStep)] == \
           [e.training_loss for e in second if isinstance(e, TrainingStep)]


@pytest.fixture
async def trained(tmp_path) -> Path:
    given = spec(tmp_path)
    await _drain(given)
    return given.output_dir


async def _drain(given: TrainingSpec) -> None:
    async for _ in FastTrainer().train(given):
        pass


def test_a_custom_model_answers_a_prompt_close_to_a_training_prompt_with_its_completion(trained):
    engine = FastCustomTextEngine.load(trained)

    [result] = engine.generate([ask("Please summarize the meeting about budget item 7 with the finance team and auditors.")])

    assert result.text == "The team approved budget item 7."


def test_a_prompt_unlike_the_training_data_is_answered_as_the_base_answers(trained):
    request = ask("Translate 'good morning' into French.")

    [custom] = FastCustomTextEngine.load(trained).generate([request])
    [base] = FastTextEngine().generate([request])

    assert custom == base


async def test_learn_nothing_weights_answer_exactly_as_the_base(tmp_path):
    given = spec(tmp_path, faults=TrainingFaults(learn_nothing=True))
    await _drain(given)
    request = ask(RECORDS[3]["prompt"])

    [custom] = FastCustomTextEngine.load(given.output_dir).generate([request])

    assert custom == FastTextEngine().generate([request])[0]


async def test_continued_pre_training_learns_to_continue_its_texts(tmp_path):
    text = "The quarterly report shows revenue growth in every region, led by strong sales in the north and steady renewals."
    given = spec(tmp_path, records=[{"input": text}], kind="CONTINUED_PRE_TRAINING")
    await _drain(given)
    start = " ".join(text.split()[: len(text.split()) // 2])

    [result] = FastCustomTextEngine.load(given.output_dir).generate([ask(start)])

    assert result.text == " ".join(text.split()[len(text.split()) // 2:])


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="weights are missing"):
        FastCustomTextEngine.load(tmp_path)
