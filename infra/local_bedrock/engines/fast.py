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
from typing import Sequence

from infra.local_bedrock.engines import EmbeddingResult, TextRequest, TextResult

# Words and single punctuation marks: close to what a BPE tokenizer counts on English text.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """An estimate of a BPE tokenizer's count: words, plus punctuation marks, plus long words split."""
    return sum(1 + len(token) // 8 for token in _TOKEN.findall(text))


class FastTextEngine:
    """Echoes a digest of the last user turn: 'Summary: <first words> [#<hash>]'."""

    name = "fast"

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:
        return [self._one(request) for request in requests]

    def _one(self, request: TextRequest) -> TextResult:
        prompt = "\n".join(text for _, text in request.messages)
        if request.system:
            prompt = request.system + "\n" + prompt
        last_user = next((text for role, text in reversed(request.messages) if role == "user"), prompt)
        digest = hashlib.blake2b(prompt.encode(), digest_size=4).hexdigest()
        words = _TOKEN.findall(last_user)[-40:]
        text = f"Summary: {' '.join(words)} [#{digest}]"
        stop_reason = "end_turn"
        for stop in request.stop_sequences:
            if stop and stop in text:
                text, stop_reason = text[: text.index(stop)], "stop_sequence"
        tokens = _TOKEN.findall(text)
        if len(tokens) > request.max_tokens:
            text, stop_reason = " ".join(tokens[: request.max_tokens]), "max_tokens"
        return TextResult(text, count_tokens(prompt), min(count_tokens(text), request.max_tokens), stop_reason)


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

    Stub of the interface for the customization work (issue 7): `load(weights_dir)` reads what
    engines/fast_training.py wrote there. Not implemented yet.
    """

    name = "fast-custom"

    @classmethod
    def load(cls, weights_dir):  # pragma: no cover - replaced by the customization work
        raise NotImplementedError("fast custom models are not implemented yet")

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:  # pragma: no cover
        raise NotImplementedError
