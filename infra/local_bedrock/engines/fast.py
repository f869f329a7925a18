"""The fast engine: deterministic outputs derived from the input, with no ML dependencies.

It answers thousands of records a second so a multi-million-row run is practical in tests and
benchmarks, while its outputs still depend on the input (a consumer that joins the wrong output
to a row is caught) and its token counts are in a realistic range (~4 characters a token).
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import orjson

from infra.local_bedrock.engines import EmbeddingResult, TextRequest, TextResult
from infra.local_bedrock.engines.fast_training import FAST_WEIGHTS, WEIGHTS_FORMAT

# Words and single punctuation marks: close to what a BPE tokenizer counts on English text.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """An estimate of a BPE tokenizer's count: words, plus punctuation marks, plus long words split
    (1 + len // 8 a word). ASCII text is counted with bytes operations: the regex costs ~30 ns a
    character, and counting prompts was most of the fast engine's time."""
    if not text.isascii():
        return _count_tokens_regex(text)
    # Each byte as its class: a word byte "a", whitespace " ", a punctuation mark ".".
    classes = text.encode("ascii").translate(_ASCII_CLASSES)
    words = classes.count(b"a ") + classes.count(b"a.") + classes.endswith(b"a")
    # Non-overlapping runs of 8 word bytes: len // 8 of each word.
    return words + classes.count(b"aaaaaaaa") + classes.count(b".")


def _count_tokens_regex(text: str) -> int:
    return sum(1 + len(token) // 8 for token in _TOKEN.findall(text))


# Taken from _TOKEN's own \w and \s, so both ways of counting agree.
_ASCII_CLASSES = bytes(ord("a") if re.match(r"\w", chr(c)) else ord(" ") if re.match(r"\s", chr(c)) else ord(".")
                       for c in range(128)) + b"." * 128


def last_tokens(text: str, n: int) -> list[str]:
    """The last `n` of _TOKEN's tokens in `text`, found in its tail, not the whole text."""
    window = 8 * n
    while True:
        tail = text[-window:]
        tokens = _TOKEN.findall(tail)
        # A tail cut inside a word gives a partial first token: exact once there are more than n.
        if len(tokens) > n or len(tail) == len(text):
            return tokens[-n:]
        window *= 4


class FastTextEngine:
    """Echoes a digest of the last user turn: 'Summary: <first words> [#<hash>]'.

    Test behaviour: a rating prompt in the shape of Quarry's LLM-as-judge prompts
    (shared/evaluation/judge.py: a <response> section and a numbered "Rating scale:") is answered
    with a rating derived from word overlap instead, so a judge on the fast engine gives
    deterministic, meaningful scores: the share of the reference answer's words (the question's,
    when there is no reference) found in the response, mapped onto the scale (none: level 1, all:
    the top level), after a one-line explanation and as a last line "Rating: <n>". A last user turn
    with a line "JSON: <text>" is answered with that text exactly, so runs with an output_schema
    get outputs that validate (or, by design, do not).
    """

    name = "fast"

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:
        return [self._one(request) for request in requests]

    def _one(self, request: TextRequest) -> TextResult:
        prompt = _prompt(request)
        last_user = next((text for role, text in reversed(request.messages) if role == "user"), prompt)
        rating = judge_rating(last_user)
        if rating is not None:
            return _finish(rating, prompt, request)
        given = _JSON_LINE.search(last_user) if "JSON: " in last_user else None
        if given is not None:
            return _finish(given.group(1).strip(), prompt, request)
        digest = hashlib.blake2b(prompt.encode(), digest_size=4).hexdigest()
        return _finish(f"Summary: {' '.join(last_tokens(last_user, 40))} [#{digest}]", prompt, request)


_SECTION = r"<{0}>\n(?P<text>.*?)\n</{0}>"
_JSON_LINE = re.compile(r"^JSON: (.+)$", re.MULTILINE)
_SCALE = re.compile(r"Rating scale:\n(?P<levels>(?:\d+\. [^\n]*\n?)+)")


def judge_rating(prompt: str) -> str | None:
    """The fast engine's answer to a judge prompt (see FastTextEngine), or None for any other prompt."""
    if "<response>" not in prompt:
        return None
    response = re.search(_SECTION.format("response"), prompt, re.DOTALL)
    scale = _SCALE.search(prompt)
    if response is None or scale is None:
        return None
    levels = len(scale.group("levels").strip().splitlines())
    reference = (re.search(_SECTION.format("reference_answer"), prompt, re.DOTALL)
                 or re.search(_SECTION.format("question"), prompt, re.DOTALL))
    wanted = _words(reference.group("text")) if reference is not None else frozenset()
    share = len(wanted & _words(response.group("text"))) / len(wanted) if wanted else 0.0
    rating = 1 + round(share * (levels - 1))
    return f"The response holds {share:.0%} of the reference's words.\nRating: {rating}"


def _prompt(request: TextRequest) -> str:
    prompt = "\n".join(text for _, text in request.messages)
    return request.system + "\n" + prompt if request.system else prompt


def _finish(text: str, prompt: str, request: TextRequest) -> TextResult:
    """A generated text cut at the request's stop sequences and max_tokens, with its token counts."""
    stop_reason = "end_turn"
    for stop in request.stop_sequences:
        if stop and stop in text:
            text, stop_reason = text[: text.index(stop)], "stop_sequence"
    output_tokens = count_tokens(text)
    # The count is at least the number of tokens, so a text within max_tokens by it needs no cut.
    if output_tokens > request.max_tokens:
        tokens = _TOKEN.findall(text)
        if len(tokens) > request.max_tokens:
            text, stop_reason = " ".join(tokens[: request.max_tokens]), "max_tokens"
    return TextResult(text, count_tokens(prompt), min(output_tokens, request.max_tokens), stop_reason)


class FastEmbeddingEngine:
    """Bag-of-hashed-words vectors: texts sharing words get similar vectors, as real ones do."""

    name = "fast"

    def embed(self, texts: Sequence[str], *, dimensions: int, normalize: bool) -> list[EmbeddingResult]:
        return [self._one(text, dimensions, normalize) for text in texts]

    def _one(self, text: str, dimensions: int, normalize: bool) -> EmbeddingResult:
        vector = [0.0] * dimensions
        words = [word.lower() for word in re.findall(r"\w+", text)]
        for word in words:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            slot, sign = struct.unpack("<Ii", digest)
            vector[slot % dimensions] += 1.0 if sign >= 0 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if normalize and norm:
            vector = [v / norm for v in vector]
        return EmbeddingResult(vector, count_tokens(text))


class FastCustomTextEngine:
    """A fast custom model: answers from the training records its fast trainer kept.

    A prompt close to a training prompt (Jaccard similarity of their word sets at least
    MATCH_THRESHOLD; the closest wins) is answered with that record's completion; any other
    prompt is answered as the base fast engine answers it. So on prompts like its training data a
    custom model beats its base, as a fine-tuned model should. Weights written under the
    `learn_nothing` fault answer every prompt as the base does (a custom model equal to its base).
    """

    name = "fast-custom"
    MATCH_THRESHOLD = 0.6

    def __init__(self, pairs: Sequence[tuple[str, str]], *, learn_nothing: bool = False) -> None:
        self._base = FastTextEngine()
        self._completions = [completion for _, completion in pairs]
        self._sizes: list[int] = []
        # Word -> records holding it: the overlap with every record is counted in one pass.
        self._postings: dict[str, list[int]] = defaultdict(list)
        for index, (prompt, _) in enumerate(pairs if not learn_nothing else ()):
            words = _words(prompt)
            self._sizes.append(len(words))
            for word in words:
                self._postings[word].append(index)

    @classmethod
    def load(cls, weights_dir: Path) -> "FastCustomTextEngine":
        """The engine for the weights the fast trainer wrote under `weights_dir`."""
        path = Path(weights_dir) / FAST_WEIGHTS
        try:
            weights = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise RuntimeError(f"the custom model's weights are missing: {path} does not exist") from None
        if weights.get("format") != WEIGHTS_FORMAT:
            raise RuntimeError(f"{path} is not in the fast engine's weights format {WEIGHTS_FORMAT}")
        return cls([tuple(pair) for pair in weights["pairs"]], learn_nothing=bool(weights.get("learn_nothing")))

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:
        return [self._one(request) for request in requests]

    def closest(self, prompt: str) -> int | None:
        """The index of the training record whose prompt is closest to `prompt`, if close enough."""
        words = _words(prompt)
        if not words:
            return None
        overlap: Counter[int] = Counter()
        for word in words:
            overlap.update(self._postings.get(word, ()))
        best, best_score = None, 0.0
        for index, shared in overlap.items():
            score = shared / (len(words) + self._sizes[index] - shared)
            if score > best_score:
                best, best_score = index, score
        return best if best_score >= self.MATCH_THRESHOLD else None

    def _one(self, request: TextRequest) -> TextResult:
        last_user = next((text for role, text in reversed(request.messages) if role == "user"), "")
        match = self.closest(last_user)
        if match is None:
            [result] = self._base.generate([request])
            return result
        return _finish(self._completions[match], _prompt(request), request)


def _words(text: str) -> frozenset[str]:
    return frozenset(word.lower() for word in re.findall(r"\w+", text))
