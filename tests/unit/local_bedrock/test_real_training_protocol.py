"""The real trainer's plumbing that needs no ML package: its schedule, the spec and events on the
wire between the service and the training process, and a child that fails before training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from infra.local_bedrock.engines.real_training import (
    RealTrainer,
    event_from_line,
    learning_rate_at,
    perplexity,
    spec_from_json,
    spec_to_json,
)
from infra.local_bedrock.training import TrainingDone, TrainingFailed, TrainingFaults, TrainingSpec, TrainingStep


def make_spec(tmp_path: Path, **overrides) -> TrainingSpec:
    fields = dict(job_id="job-1", customization_type="FINE_TUNING", base_model_id="meta.llama3-1-8b-instruct-v1:0",
                  train_path=tmp_path / "train.jsonl", validation_path=None, output_dir=tmp_path / "out",
                  epochs=2, batch_size=4, learning_rate=1e-4, warmup_steps=3)
    return TrainingSpec(**{**fields, **overrides})


def test_learning_rate_warms_up_linearly_then_stays_at_its_peak():
    rates = [learning_rate_at(step, peak=1.0, warmup=4) for step in range(8)]

    assert rates == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_without_warmup_the_first_step_uses_the_full_rate():
    assert learning_rate_at(0, peak=2e-4, warmup=0) == 2e-4


def test_a_spec_survives_the_trip_to_the_training_process(tmp_path):
    spec = make_spec(tmp_path, validation_path=tmp_path / "v.jsonl",
                     faults=TrainingFaults(diverge=True, failure_message="boom"))

    assert spec_from_json(spec_to_json(spec)) == spec


def test_paths_are_sent_absolute_because_the_child_runs_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sent = json.loads(spec_to_json(make_spec(Path("relative"))))

    assert sent["train_path"] == str(tmp_path / "relative" / "train.jsonl")
    assert sent["validation_path"] is None


def test_lines_from_the_training_process_become_events():
    step = event_from_line({"event": "step", "step_number": 0, "epoch_number": 1, "training_loss": 2.0,
                            "perplexity": math.exp(2.0), "total_steps": 5})
    done = event_from_line({"event": "done", "training_loss": 1.5, "validation_loss": None})

    assert step == TrainingStep(0, 1, 2.0, math.exp(2.0), 5)
    assert done == TrainingDone(1.5, None)


def test_an_error_line_fails_the_training_with_its_message():
    with pytest.raises(TrainingFailed, match="^out of memory$"):
        event_from_line({"event": "error", "message": "out of memory"})


def test_perplexity_of_a_diverged_loss_is_infinite_not_an_error():
    assert perplexity(1000.0) == math.inf


async def test_a_training_process_that_cannot_read_its_data_fails_the_job_with_the_cause(tmp_path):
    spec = make_spec(tmp_path)  # train.jsonl was never written

    with pytest.raises(TrainingFailed, match="No such file"):
        async for _ in RealTrainer().train(spec):
            pass
