"""The real trainer: fine-tunes SmolLM2-135M-Instruct on CPU, in a process of its own.

`RealTrainer.train(spec)` runs `python -m infra.local_bedrock.engines.real_training SPEC.json`
and turns the JSON lines the child prints (one per optimizer step, per validation, then "done"
or "error") into training events, so the service keeps answering requests while a job trains.
Closing the event iterator (the job was stopped) or cancelling it kills the child; the child
also exits when its stdin closes, so it cannot outlive a service that died without cleaning up.

What the child trains, and why:
- Only the last 4 transformer layers and the final norm; everything else is frozen. On 2 cores,
  200 DialogSum rows at batch 4 and lr 1e-4 take 2-5 minutes and 2.1-2.5 GB (README, "Real
  fine-tuning") and lift held-out ROUGE-L as much as LoRA over every layer, which is 3x slower
  and needs 9.5 GB.
- FINE_TUNING records {prompt, completion} are rendered exactly as the real engine serves a
  request: the prompt is a user turn through the chat template (generation prompt included) and
  the completion is the assistant's answer, ended by <|im_end|>. The loss is on the completion
  tokens only. Over-long rows lose the end of the prompt's text, never the completion.
- CONTINUED_PRE_TRAINING records {input}: the loss is on the whole text, cut into blocks.
- Faults: `diverge` multiplies the learning rate by 1,000 (the loss climbs); `learn_nothing`
  trains at rate 0. The runner, not the trainer, ends a job part-way (training.py).
- Only the trained tensors are saved (safetensors, ~56 MB) with a JSON naming the base weights;
  `engines.real.custom_text_engine` loads the base and lays these tensors over it.

This module imports no ML package at import time: the service's side of it is plain asyncio.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from infra.local_bedrock.training import (
    TrainingDone,
    TrainingEvent,
    TrainingFailed,
    TrainingFaults,
    TrainingSpec,
    TrainingStep,
    ValidationResult,
)

ROOT = Path(__file__).resolve().parents[3]
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "custom_model.json"
MANIFEST_FORMAT = 1
TRAINED_LAYERS = 4
MAX_LENGTH = 512
# The diverge fault multiplies the learning rate by this: Adam's steps grow with the rate, so
# at ~0.1 the trained layers are wrecked within a few steps and the loss climbs.
DIVERGE_LR_FACTOR = 1000.0


# ---------------------------------------------------------------------------------------------
# The service's side: a subprocess and its JSON lines
# ---------------------------------------------------------------------------------------------


def spec_to_json(spec: TrainingSpec) -> str:
    """Serialize a spec for the child, with every path made absolute."""
    data = dataclasses.asdict(spec)
    for key in ("train_path", "validation_path", "output_dir"):
        if data[key] is not None:
            data[key] = str(Path(data[key]).resolve())
    return json.dumps(data)


def spec_from_json(text: str) -> TrainingSpec:
    """The inverse of spec_to_json."""
    data = json.loads(text)
    data["faults"] = TrainingFaults(**data["faults"])
    for key in ("train_path", "validation_path", "output_dir"):
        if data[key] is not None:
            data[key] = Path(data[key])
    return TrainingSpec(**data)


def event_from_line(line: dict[str, Any]) -> TrainingEvent:
    """Turn one of the child's JSON lines into an event; raise TrainingFailed for an error line."""
    kind = line.pop("event")
    if kind == "step":
        return TrainingStep(**line)
    if kind == "validation":
        return ValidationResult(**line)
    if kind == "done":
        return TrainingDone(**line)
    if kind == "error":
        raise TrainingFailed(line["message"])
    raise ValueError(f"unknown training event {kind!r}")


class RealTrainer:
    """Fine-tunes SmolLM2-135M-Instruct in a child process (see the module docstring)."""

    name = "real"

    async def train(self, spec: TrainingSpec) -> AsyncIterator[TrainingEvent]:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="real-training-") as scratch:
            spec_path, log_path = Path(scratch) / "spec.json", Path(scratch) / "stderr.log"
            spec_path.write_text(spec_to_json(spec))
            with log_path.open("wb") as stderr:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "infra.local_bedrock.engines.real_training", str(spec_path),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                    cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                    limit=1 << 20,
                )
                try:
                    async with contextlib.aclosing(_events(process)) as events:
                        async for event in events:
                            yield event
                            if isinstance(event, TrainingDone):
                                return
                finally:
                    # Reached on success, on an error, on aclose() (a stopped job) and on
                    # cancellation alike: a child still running is killed, never left training.
                    await _kill(process)
            # Stdout closed without "done" or "error": the child crashed (or was killed, by the
            # kernel's OOM killer say). Its last line of stderr usually names the cause.
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise TrainingFailed(f"Training process exited with code {process.returncode} before finishing. "
                                 f"{tail[0]}".strip())


async def _events(process: asyncio.subprocess.Process) -> AsyncIterator[TrainingEvent]:
    """The child's events, in order; after "done", only once the child exited cleanly."""
    assert process.stdout is not None
    async for raw in process.stdout:
        if not raw.strip().startswith(b"{"):
            continue  # a library printed to stdout; the protocol's lines are JSON objects
        event = event_from_line(json.loads(raw))
        if isinstance(event, TrainingDone) and await process.wait() != 0:
            raise TrainingFailed(f"Training process exited with code {process.returncode} after finishing.")
        yield event


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
    await process.wait()


# ---------------------------------------------------------------------------------------------
# The child: data, the training loop, the saved tensors
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Example:
    """One training sequence: token ids, and the labels (-100 where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """A prompt as the real engine renders a one-turn request (SmolLM2TextEngine.prompt)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


def fine_tuning_example(tokenizer: Any, record: dict[str, Any], max_length: int = MAX_LENGTH) -> Example:
    """A {prompt, completion} record as chat tokens, the loss on the completion and <|im_end|>."""
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    completion = encode(record["completion"]) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompt = encode(chat_prompt(tokenizer, record["prompt"]))
    overflow = len(prompt) + len(completion) - max_length
    if overflow > 0:
        # Cut the end of the prompt's text, keeping the chat markers and the instruction that
        # usually opens it; the completion is what the model must learn, so it is never cut.
        text_ids = encode(record["prompt"])
        kept = tokenizer.decode(text_ids[: max(0, len(text_ids) - overflow)])
        prompt = encode(chat_prompt(tokenizer, kept))
    return Example(prompt + completion, [-100] * len(prompt) + completion)


def pre_training_examples(tokenizer: Any, record: dict[str, Any], max_length: int = MAX_LENGTH) -> list[Example]:
    """An {input} record as blocks of at most max_length tokens, the loss on every token."""
    ids = tokenizer(record["input"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # Blocks overlap by one token, the last of one being the first of the next, so every token
    # but the very first is predicted exactly once.
    stride = max_length - 1
    blocks = [ids[start : start + max_length] for start in range(0, max(1, len(ids) - 1), stride)]
    return [Example(block, list(block)) for block in blocks if len(block) > 1]


def build_examples(tokenizer: Any, records: list[dict[str, Any]], customization_type: str) -> list[Example]:
    if customization_type == "CONTINUED_PRE_TRAINING":
        return [ex for record in records for ex in pre_training_examples(tokenizer, record)]
    return [fine_tuning_example(tokenizer, record) for record in records]


def collate(torch: Any, examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; padding gets no attention and no loss."""
    width = max(len(ex.input_ids) for ex in examples)
    ids = [ex.input_ids + [pad_id] * (width - len(ex.input_ids)) for ex in examples]
    labels = [ex.labels + [-100] * (width - len(ex.labels)) for ex in examples]
    mask = [[1] * len(ex.input_ids) + [0] * (width - len(ex.input_ids)) for ex in examples]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


def token_loss_sum(torch: Any, model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token cross-entropy over the labelled tokens, and how many there are.

    The (frozen, tied) LM head runs only on positions that carry a label: for fine-tuning that
    is the completion, a few dozen tokens of a few hundred, which saves most of the memory and
    time a 49k-word vocabulary costs."""
    hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = model.lm_head(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return loss, int(keep.sum())


def trainable_parameters(model: Any, layers: int = TRAINED_LAYERS) -> dict[str, Any]:
    """Freeze the model except its last `layers` decoder layers and the final norm."""
    count = model.config.num_hidden_layers
    prefixes = tuple(f"model.layers.{i}." for i in range(count - layers, count)) + ("model.norm.",)
    trained = {}
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(prefixes))
        if param.requires_grad:
            trained[name] = param
    return trained


def learning_rate_at(step: int, *, peak: float, warmup: int) -> float:
    """Linear warmup to `peak` over `warmup` steps, then constant.

    Constant rather than decaying: jobs here are short (tens of steps), and on 200 DialogSum rows
    a linear decay to zero halved what the model learned (held-out ROUGE-L 0.21 against 0.31)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    return peak


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def batches(examples: list[Example], size: int, generator: Any, torch: Any) -> Iterator[list[Example]]:
    order = torch.randperm(len(examples), generator=generator).tolist()
    for start in range(0, len(order), size):
        yield [examples[i] for i in order[start : start + size]]


class TrainingRun:
    """One fine-tune in the child process; emits protocol lines through `emit`."""

    def __init__(self, spec: TrainingSpec, emit: Any):
        self.spec, self.emit = spec, emit

    def run(self) -> None:
        spec = self.spec
        # The data is read before the ML imports and the model load (seconds): a bad file fails now.
        records = read_jsonl(spec.train_path)
        validation_records = read_jsonl(spec.validation_path) if spec.validation_path else []
        from infra.local_bedrock.engines import real

        real._offline()
        import torch

        torch.set_num_threads(training_threads(real._cpu_threads()))
        torch.manual_seed(0)
        tokenizer, model = load_base(real)
        examples = build_examples(tokenizer, records, spec.customization_type)
        validation = build_examples(tokenizer, validation_records, spec.customization_type)
        if not examples:
            raise TrainingFailed("The training data has no usable records.")
        trained = trainable_parameters(model)
        if _native_bf16(torch):
            # The frozen part runs in bf16, as the real engine serves it: half the memory, and no
            # cast of its weights at every step. The trained tensors and Adam's state stay fp32.
            for param in model.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        self._train(torch, model, tokenizer, examples, validation, trained)
        save_weights(spec.output_dir, trained, spec)

    def _train(self, torch: Any, model: Any, tokenizer: Any, examples: list[Example],
               validation: list[Example], trained: dict[str, Any]) -> None:
        spec = self.spec
        steps_per_epoch = math.ceil(len(examples) / spec.batch_size)
        total = steps_per_epoch * spec.epochs
        optimizer = torch.optim.AdamW(list(trained.values()), lr=self._peak_rate(), weight_decay=0.0)
        generator = torch.Generator().manual_seed(0)
        step, epoch_losses, validation_loss = 0, [], None
        model.train()
        for epoch in range(1, spec.epochs + 1):
            epoch_losses = []
            for batch in batches(examples, spec.batch_size, generator, torch):
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(step, peak=self._peak_rate(), warmup=spec.warmup_steps)
                loss = self._step(torch, model, optimizer, trained, collate(torch, batch, tokenizer.pad_token_id))
                epoch_losses.append(loss)
                # Steps are numbered from 0, as in Bedrock's step_wise_training_metrics.csv.
                self.emit({"event": "step", "step_number": step, "epoch_number": epoch, "training_loss": loss,
                           "perplexity": perplexity(loss), "total_steps": total})
                step += 1
            if validation:
                validation_loss = self._validate(torch, model, tokenizer, validation)
                self.emit({"event": "validation", "step_number": step - 1, "epoch_number": epoch,
                           "validation_loss": validation_loss, "perplexity": perplexity(validation_loss)})
        self._final = (sum(epoch_losses) / len(epoch_losses), validation_loss)

    def _peak_rate(self) -> float:
        """The job's learning rate, as the faults bend it (the runner enforces the others)."""
        faults = self.spec.faults
        if faults.learn_nothing:
            return 0.0  # the saved tensors are the base's own: the custom model answers as its base
        return self.spec.learning_rate * (DIVERGE_LR_FACTOR if faults.diverge else 1.0)

    @staticmethod
    def _step(torch: Any, model: Any, optimizer: Any, trained: dict[str, Any], batch: dict[str, Any]) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_native_bf16(torch)):
            loss_sum, count = token_loss_sum(torch, model, batch)
        loss = loss_sum / max(1, count)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(trained.values()), 1.0)
        optimizer.step()
        return float(loss.detach())

    @staticmethod
    def _validate(torch: Any, model: Any, tokenizer: Any, validation: list[Example]) -> float:
        """Token-weighted mean loss over the validation examples."""
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=_native_bf16(torch)):
            for start in range(0, len(validation), 8):
                loss_sum, n = token_loss_sum(torch, model, collate(torch, validation[start : start + 8],
                                                                   tokenizer.pad_token_id))
                total, count = total + float(loss_sum), count + n
        model.train()
        return total / max(1, count)


def _native_bf16(torch: Any) -> bool:
    from infra.local_bedrock.engines import real

    # Autocast to bf16 where the CPU does bf16 natively; emulated bf16 is slower than fp32. The
    # trained weights and Adam's state stay fp32 either way.
    return real._pick_dtype(torch, "auto") == torch.bfloat16


def training_threads(cores: int) -> int:
    """All cores on a small machine; one left for the service on a bigger one."""
    return cores if cores <= 2 else cores - 1


def load_base(real: Any) -> tuple[Any, Any]:
    """The tokenizer and fp32 model from the GGUF the real engine serves."""
    import transformers

    gguf = real.smollm2_gguf_path()
    kwargs = {"gguf_file": gguf.name, "local_files_only": True}

    def load() -> tuple[Any, Any]:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)

    return real._quietly(load)


def save_weights(output_dir: Path, trained: dict[str, Any], spec: TrainingSpec) -> None:
    """Write the trained tensors and the manifest naming their base; the manifest goes last."""
    from safetensors.torch import save_file

    from infra.local_bedrock.engines import real

    output_dir.mkdir(parents=True, exist_ok=True)
    tensors = {name: param.detach().float().contiguous() for name, param in trained.items()}
    save_file(tensors, str(output_dir / WEIGHTS_FILE), metadata={"base": real.SMOLLM2_GGUF})
    manifest = {
        "format": MANIFEST_FORMAT,
        "base": real.SMOLLM2_GGUF,
        "base_package": real.SMOLLM2_PACKAGE,
        "weights": WEIGHTS_FILE,
        "tensors": sorted(tensors),
        "customization_type": spec.customization_type,
        "max_length": MAX_LENGTH,
    }
    (output_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def _watch_parent() -> None:
    """Exit when stdin closes: the service that started this process is gone."""
    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader
        # makes the interpreter abort at exit.
        while os.read(0, 4096):
            pass
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    out = sys.stdout
    # Libraries may print; the protocol owns the real stdout and everything else goes to stderr.
    sys.stdout = sys.stderr

    def emit(line: dict[str, Any]) -> None:
        out.write(json.dumps(line) + "\n")
        out.flush()

    _watch_parent()
    spec = spec_from_json(Path(argv[0]).read_text())
    run = TrainingRun(spec, emit)
    try:
        run.run()
    except TrainingFailed as exc:
        emit({"event": "error", "message": str(exc)})
        return 1
    except Exception as exc:  # anything else still ends the job with a message, never silently
        emit({"event": "error", "message": f"Training failed: {type(exc).__name__}: {exc}"})
        raise
    training_loss, validation_loss = run._final
    emit({"event": "done", "training_loss": training_loss, "validation_loss": validation_loss})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
