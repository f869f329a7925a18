"""The one code path from request bodies to model outputs, shared by InvokeModel, Converse and
batch records, so a record in a batch job behaves exactly like the same body sent on demand."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from infra.local_bedrock import families
from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.engines import EmbeddingEngine, TextEngine, TextRequest, TextResult
from infra.local_bedrock.custom_models import CustomModel
from infra.local_bedrock.engines.fast import FastCustomTextEngine, FastEmbeddingEngine, FastTextEngine, count_tokens
from infra.local_bedrock.errors import BedrockError
from infra.local_bedrock.faults import WRONG_ANSWER, answer_is_wrong
from infra.local_bedrock.settings import EngineName, Settings


@dataclass(frozen=True)
class Outcome:
    """One body's result: a native response, or the error Bedrock would give for it."""

    response: dict[str, Any] | None
    error: BedrockError | None
    input_tokens: int = 0
    output_tokens: int = 0


class Engines:
    """The engines by name, each loaded once, on first use (the real one takes seconds to load)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._text: dict[EngineName, TextEngine] = {}
        self._embedding: dict[EngineName, EmbeddingEngine] = {}
        self._custom: dict[str, TextEngine] = {}

    def text(self, model: FoundationModel, custom: CustomModel | None = None) -> TextEngine:
        if custom is not None:
            return self.custom_text(custom)
        name = self._settings.engine_for(model.model_id)
        if name not in self._text:
            self._text[name] = FastTextEngine() if name == "fast" else _real().SmolLM2TextEngine(
                batch_size=self._model_batch(), repetition_penalty=self._settings.real_repetition_penalty)
        return self._text[name]

    def custom_text(self, custom: CustomModel) -> TextEngine:
        """The engine serving a custom model's weights: the engine that trained them, loaded once."""
        if custom.model_id not in self._custom:
            if custom.engine == "fast":
                self._custom[custom.model_id] = FastCustomTextEngine.load(custom.weights_dir)
            else:
                self._custom[custom.model_id] = _real().custom_text_engine(
                    custom.weights_dir, batch_size=self._model_batch(),
                    repetition_penalty=self._settings.real_repetition_penalty)
        return self._custom[custom.model_id]

    def _model_batch(self) -> int:
        """Rows the real engine runs on the model at once: a job's mini-batch, up to the engine's
        default (32, the fastest measured). A larger mini-batch is sorted by prompt length first
        and cut into batches of this size, which is where the larger mini-batch pays."""
        return min(self._settings.batch_size, _real().DEFAULT_TEXT_BATCH)

    def forget_custom(self, model_id: str) -> None:
        """Drop a custom model's loaded engine (the model was deleted or is no longer hosted)."""
        self._custom.pop(model_id, None)

    def embedding(self, model: FoundationModel) -> EmbeddingEngine:
        name = self._settings.engine_for(model.model_id)
        if name not in self._embedding:
            self._embedding[name] = FastEmbeddingEngine() if name == "fast" else _real().MiniLMEmbeddingEngine()
        return self._embedding[name]

    def preload(self, models: Sequence[FoundationModel]) -> None:
        """Load every engine these models use now, so the first request does not pay for it."""
        for model in models:
            self.embedding(model) if model.is_embedding else self.text(model)


def _real():
    # Imported on demand: the ML packages are an optional extra and the fast engine needs none.
    try:
        from infra.local_bedrock.engines import real
    except ImportError as exc:
        raise RuntimeError(
            f"the real engine needs the ML extra ({exc.name} is missing): run `make install-real`"
        ) from exc
    return real


@dataclass(frozen=True)
class WrongAnswers:
    """A wrong_answer_rate fault in force (faults.py): this share of `model_id`'s answers is replaced."""

    rate: float
    model_id: str


def invoke_many(engines: Engines, model: FoundationModel, bodies: Sequence[Any], converse: bool,
                custom: CustomModel | None = None, wrong: WrongAnswers | None = None) -> list[Outcome]:
    """Run bodies of one model as a mini-batch; blocking, so call it from a worker thread.

    `model` is the family the bodies are read and answered in; for a custom model it is the base
    model, and `custom` names the weights that generate. `wrong`: an injected wrong-answer fault."""
    started = time.monotonic()
    outcomes: list[Outcome | None] = [None] * len(bodies)
    parsed: dict[int, Any] = {}
    for index, body in enumerate(bodies):
        try:
            parsed[index] = families.parse_converse(model, body) if converse else families.parse_body(model, body)
        except BedrockError as error:
            outcomes[index] = Outcome(None, error)
    if model.is_embedding and not converse:
        _embed(engines.embedding(model), parsed, outcomes)
    else:
        _generate(engines.text(model, custom), model, parsed, outcomes, converse, started, wrong)
    return [outcome for outcome in outcomes if outcome is not None]


def _generate(engine: TextEngine, model: FoundationModel, parsed: dict[int, Any], outcomes: list,
              converse: bool, started: float, wrong: WrongAnswers | None = None) -> None:
    indexes = list(parsed)
    requests: list[TextRequest] = [families.text_request(parsed[i]) for i in indexes]
    results = engine.generate(requests) if requests else []
    latency_ms = int((time.monotonic() - started) * 1000)
    if wrong is not None:
        results = [_wrong(result) if answer_is_wrong(wrong.rate, wrong.model_id, _request_key(request)) else result
                   for request, result in zip(requests, results)]
    for index, result in zip(indexes, results):
        response = (families.converse_response(result, latency_ms) if converse
                    else families.text_response(model, result))
        outcomes[index] = Outcome(response, None, result.input_tokens, result.output_tokens)


def _request_key(request: TextRequest) -> str:
    """What makes a request this request for the wrong-answer fault: its system and turns."""
    return repr((request.system, request.messages))


def _wrong(result: TextResult) -> TextResult:
    """The injected wrong answer in place of the engine's (input tokens kept, output re-counted)."""
    return TextResult(WRONG_ANSWER, result.input_tokens, count_tokens(WRONG_ANSWER), "end_turn")


def _embed(engine: EmbeddingEngine, parsed: dict[int, Any], outcomes: list) -> None:
    # One engine call per (dimensions, normalize) pair, since those are per-call arguments.
    groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for index, body in parsed.items():
        groups[(body.dimensions, body.normalize)].append(index)
    for (dimensions, normalize), indexes in groups.items():
        results = engine.embed([parsed[i].inputText for i in indexes], dimensions=dimensions, normalize=normalize)
        for index, result in zip(indexes, results):
            outcomes[index] = Outcome(families.embedding_response(result), None, result.input_tokens, 0)
