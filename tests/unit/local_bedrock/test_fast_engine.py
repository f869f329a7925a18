"""The fast engine: deterministic, derived from the input, realistic token counts."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from infra.local_bedrock.engines import TextRequest
from infra.local_bedrock.engines.fast import (_TOKEN, FastEmbeddingEngine, FastTextEngine, _count_tokens_regex,
                                              count_tokens, last_tokens)


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


_ALPHABET = "ab_9 \t\n\x1c.,;'\"é漢-"


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=80))
def test_counting_ascii_text_with_bytes_operations_agrees_with_the_regex(text):
    # "9" becomes a 64-character word, so long words (split every 8 characters) are common.
    text = text.replace("9", "abcdefgh" * 8)
    ascii_only = text.encode("ascii", "ignore").decode()

    assert count_tokens(text) == _count_tokens_regex(text)
    assert count_tokens(ascii_only) == _count_tokens_regex(ascii_only)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=400), st.integers(min_value=1, max_value=12))
def test_the_last_tokens_are_found_from_the_tail_as_from_the_whole_text(text, n):
    text = text.replace("9", "abcdefgh" * 8)

    assert last_tokens(text, n) == _TOKEN.findall(text)[-n:]
