"""Engines behind the local Bedrock's models.

An engine is plain, blocking Python: the service calls it from a worker thread, a mini-batch of
requests at a time, so a batched engine (the real one) gets the whole batch and a cheap one (the
fast one) just loops. Every family's body is reduced to a TextRequest or an embedding text before
it reaches an engine, so any engine can stand behind any model id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

StopReason = Literal["end_turn", "max_tokens", "stop_sequence"]


@dataclass(frozen=True)
class TextRequest:
    """One generation: a chat (system + turns) already extracted from the family's body."""

    messages: tuple[tuple[str, str], ...]  # (role, text); role is "user" or "assistant"
    system: str | None = None
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    stop_sequences: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class TextResult:
    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: StopReason


@dataclass(frozen=True)
class EmbeddingResult:
    vector: list[float]
    input_tokens: int


class TextEngine(Protocol):
    name: str

    def generate(self, requests: Sequence[TextRequest]) -> list[TextResult]:
        """Generate one result per request, in request order."""
        ...


class EmbeddingEngine(Protocol):
    name: str

    def embed(self, texts: Sequence[str], *, dimensions: int, normalize: bool) -> list[EmbeddingResult]:
        """Embed each text into exactly `dimensions` floats, in input order."""
        ...
