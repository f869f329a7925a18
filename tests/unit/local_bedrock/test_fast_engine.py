"""The fast engine: deterministic, derived from the input, realistic token counts."""
from __future__ import annotations

import math

from infra.local_bedrock.engines import TextRequest
from infra.local_bedrock.engines.fast import FastEmbeddingEngine, FastTextEngine, count_tokens


def request(text: str, **kwargs) -> TextRequest:
    return TextRequest((("user", text),), **kwargs)


def test_the_same_prompt_gives_the_same_text_and_different_prompts_differ():
    engine = FastTextEngine()

    first, again, other = engine.generate([request("Alpha beta"), request("Alpha beta"), request("Gamma delta")])

    assert first == again
    assert first.text != other.text
    assert "Alpha" in first.text


def test_max_tokens_truncates_and_reports_it():
    [result] = FastTextEngine().generate([request("one two three four five six", max_tokens=4)])

    assert result.stop_reason == "max_tokens" and result.output_tokens == 4


def test_a_stop_sequence_cuts_the_text():
    [result] = FastTextEngine().generate([request("keep this STOP drop that", stop_sequences=("STOP",))])

    assert result.stop_reason == "stop_sequence" and "drop" not in result.text


def test_token_counts_are_about_four_characters_a_token():
    text = "The quick brown fox jumps over the lazy dog, twice; then it rests. " * 20

    assert 0.15 < count_tokens(text) / len(text) < 0.35


def test_embeddings_have_the_asked_size_and_unit_norm():
    [vector] = FastEmbeddingEngine().embed(["hello world"], dimensions=256, normalize=True)

    assert len(vector.vector) == 256
    assert math.isclose(sum(v * v for v in vector.vector), 1.0)


def test_texts_sharing_words_are_closer_than_unrelated_ones():
    engine = FastEmbeddingEngine()
    a, b, c = (r.vector for r in engine.embed(
        ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew sharply"], dimensions=1024, normalize=True))

    def cosine(x, y):
        return sum(p * q for p, q in zip(x, y))

    assert cosine(a, b) > cosine(a, c)
