"""Each model family's native request and response bodies.

A body is validated as Bedrock validates it (unknown keys, missing keys and wrong types are a
ValidationException that names the key), reduced to an engine request, and the engine's result
is dressed in the family's own response shape. InvokeModel, Converse and batch records all come
through here, so a batch record behaves exactly like the same body sent to InvokeModel.
"""
from __future__ import annotations

import re
import random
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.local_bedrock.catalogue import Family, FoundationModel
from infra.local_bedrock.engines import EmbeddingResult, TextRequest, TextResult
from infra.local_bedrock.errors import validation


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


# --- Anthropic messages -------------------------------------------------------------------------
class _AnthropicBlock(_Body):
    type: Literal["text"]
    text: str


class _AnthropicMessage(_Body):
    role: Literal["user", "assistant"]
    content: Union[str, list[_AnthropicBlock]]


class AnthropicBody(_Body):
    anthropic_version: Literal["bedrock-2023-05-31"]
    max_tokens: int = Field(ge=1, le=8192)
    messages: list[_AnthropicMessage] = Field(min_length=1)
    system: Union[str, list[_AnthropicBlock], None] = None
    temperature: float = Field(1.0, ge=0, le=1)
    top_p: float = Field(0.999, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=500)
    stop_sequences: list[str] = Field(default_factory=list, max_length=8191)


# --- Amazon Titan text ---------------------------------------------------------------------------
class _TitanConfig(_Body):
    maxTokenCount: int = Field(512, ge=0, le=8192)
    temperature: float = Field(0.0, ge=0, le=1)
    topP: float = Field(1.0, ge=0, le=1)
    stopSequences: list[str] = Field(default_factory=list)


class TitanTextBody(_Body):
    inputText: str = Field(min_length=1)
    textGenerationConfig: _TitanConfig = Field(default_factory=_TitanConfig)


class TitanEmbedBody(_Body):
    inputText: str = Field(min_length=1, max_length=50_000)
    dimensions: Literal[256, 512, 1024] = 1024
    normalize: bool = True
    embeddingTypes: list[Literal["float", "binary"]] = Field(default_factory=lambda: ["float"])


# --- Amazon Nova and Converse --------------------------------------------------------------------
class _TextBlock(_Body):
    text: str


class _ChatMessage(_Body):
    role: Literal["user", "assistant"]
    content: list[_TextBlock] = Field(min_length=1)


class _NovaConfig(_Body):
    max_new_tokens: int | None = Field(None, ge=1, le=10_000)
    maxTokens: int | None = Field(None, ge=1, le=10_000)
    temperature: float = Field(0.7, ge=0, le=1)
    topP: float = Field(0.9, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    topK: int | None = Field(None, ge=0, le=128)
    top_k: int | None = Field(None, ge=0, le=128)
    stopSequences: list[str] = Field(default_factory=list)


class NovaBody(_Body):
    schemaVersion: Literal["messages-v1"] = "messages-v1"
    messages: list[_ChatMessage] = Field(min_length=1)
    system: list[_TextBlock] = Field(default_factory=list)
    inferenceConfig: _NovaConfig = Field(default_factory=_NovaConfig)


class _ConverseConfig(_Body):
    maxTokens: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0, le=1)
    topP: float = Field(0.9, ge=0, le=1)
    stopSequences: list[str] = Field(default_factory=list, max_length=2500)


class ConverseBody(_Body):
    """A Converse request's body: the fields of the runtime API a batch record may carry."""

    messages: list[_ChatMessage] = Field(min_length=1)
    system: list[_TextBlock] = Field(default_factory=list)
    inferenceConfig: _ConverseConfig = Field(default_factory=_ConverseConfig)
    additionalModelRequestFields: dict[str, Any] | None = None


# --- Prompt-string families ----------------------------------------------------------------------
class LlamaBody(_Body):
    prompt: str = Field(min_length=1)
    max_gen_len: int = Field(512, ge=1, le=2048)
    temperature: float = Field(0.5, ge=0, le=1)
    top_p: float = Field(0.9, ge=0, le=1)


class MistralBody(_Body):
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(512, ge=1, le=8192)
    temperature: float = Field(0.5, ge=0, le=1)
    top_p: float = Field(0.9, ge=0, le=1)
    top_k: int | None = Field(None, ge=1, le=200)
    stop: list[str] = Field(default_factory=list, max_length=10)


class CohereBody(_Body):
    prompt: str = Field(min_length=1)
    max_tokens: int = Field(20, ge=1, le=4096)
    temperature: float = Field(0.9, ge=0, le=5)
    p: float = Field(0.75, ge=0, le=1)
    k: int = Field(0, ge=0, le=500)
    stop_sequences: list[str] = Field(default_factory=list, max_length=4)
    return_likelihoods: Literal["GENERATION", "ALL", "NONE"] = "NONE"
    stream: bool = False
    num_generations: int = Field(1, ge=1, le=5)


_BODIES: dict[Family, type[_Body]] = {
    "anthropic": AnthropicBody,
    "titan-text": TitanTextBody,
    "titan-embed": TitanEmbedBody,
    "nova": NovaBody,
    "llama": LlamaBody,
    "mistral": MistralBody,
    "cohere": CohereBody,
}


def parse_body(model: FoundationModel, body: Any) -> _Body:
    """The family's body, validated; a ValidationException names the offending key."""
    return _validated(_BODIES[model.family], body)


def parse_converse(model: FoundationModel, body: Any) -> ConverseBody:
    """A Converse request for a text model; embedding models do not converse."""
    if model.is_embedding:
        raise validation(f"The model {model.model_id} does not support the Converse operation.")
    return _validated(ConverseBody, body)


def _validated(kind: type[_Body], body: Any) -> Any:
    if not isinstance(body, dict):
        raise validation("Malformed input request: #: expected type: JSONObject, found: "
                         f"{type(body).__name__}, please reformat your input and try again.")
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        raise validation(_bedrock_message(exc)) from None


def _bedrock_message(exc: ValidationError) -> str:
    """pydantic's errors in Bedrock's wording: '#/path: problem'."""
    problems = []
    for error in exc.errors()[:5]:
        location = [str(part) for part in error["loc"] if not str(part).startswith(("str", "list["))]
        pointer = "#/" + "/".join(location[:-1]) if error["type"] in ("missing", "extra_forbidden") else "#/" + "/".join(location)
        pointer = pointer.rstrip("/") or "#"
        key = location[-1] if location else ""
        if error["type"] == "missing":
            problems.append(f"{pointer}: required key [{key}] not found")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{pointer}: extraneous key [{key}] is not permitted")
        else:
            problems.append(f"{pointer}: {error['msg']}")
    return "Malformed input request: " + ", ".join(problems) + ", please reformat your input and try again."


# --- Bodies to engine requests -------------------------------------------------------------------
def text_request(body: _Body) -> TextRequest:
    """The engine request a text body asks for."""
    if isinstance(body, AnthropicBody):
        system = body.system if isinstance(body.system, str) or body.system is None else "\n".join(b.text for b in body.system)
        turns = tuple((m.role, m.content if isinstance(m.content, str) else "\n".join(b.text for b in m.content))
                      for m in body.messages)
        return TextRequest(turns, system, body.max_tokens, body.temperature, body.top_p, tuple(body.stop_sequences))
    if isinstance(body, (NovaBody, ConverseBody)):
        config = body.inferenceConfig
        turns = tuple((m.role, "\n".join(b.text for b in m.content)) for m in body.messages)
        system = "\n".join(b.text for b in body.system) or None
        if isinstance(config, _NovaConfig):
            max_tokens = config.maxTokens or config.max_new_tokens or 512
            top_p = config.top_p if config.top_p is not None else config.topP
        else:
            max_tokens, top_p = config.maxTokens, config.topP
        return TextRequest(turns, system, max_tokens, config.temperature, top_p, tuple(config.stopSequences))
    if isinstance(body, TitanTextBody):
        config = body.textGenerationConfig
        return TextRequest((("user", body.inputText),), None, max(config.maxTokenCount, 1), config.temperature,
                           config.topP, tuple(config.stopSequences))
    if isinstance(body, LlamaBody):
        return TextRequest(_prompt_turns(body.prompt), None, body.max_gen_len, body.temperature, body.top_p)
    if isinstance(body, MistralBody):
        return TextRequest(_prompt_turns(body.prompt), None, body.max_tokens, body.temperature, body.top_p,
                           tuple(body.stop))
    if isinstance(body, CohereBody):
        return TextRequest(_prompt_turns(body.prompt), None, body.max_tokens, min(body.temperature, 1.0), body.p,
                           tuple(body.stop_sequences))
    raise TypeError(f"{type(body).__name__} is not a text body")


# Chat-template markers that Llama and Mistral prompts carry; an engine wants the plain text.
_TEMPLATE_MARKERS = re.compile(
    r"<\|begin_of_text\|>|<\|eot_id\|>|<\|start_header_id\|>\w+<\|end_header_id\|>|</?s>|\[/?INST\]|<<SYS>>|<</SYS>>"
)


def _prompt_turns(prompt: str) -> tuple[tuple[str, str], ...]:
    return (("user", _TEMPLATE_MARKERS.sub(" ", prompt).strip() or prompt),)


# --- Engine results to native responses -----------------------------------------------------------
def text_response(model: FoundationModel, result: TextResult) -> dict[str, Any]:
    """The family's native response body for one generation."""
    family = model.family
    if family == "anthropic":
        return {
            "id": f"msg_bdrk_{_hex_id(96)}",
            "type": "message",
            "role": "assistant",
            "model": model.model_id.split(".", 1)[1],
            "content": [{"type": "text", "text": result.text}],
            "stop_reason": result.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens},
        }
    if family == "titan-text":
        reason = {"end_turn": "FINISH", "max_tokens": "LENGTH", "stop_sequence": "STOP_CRITERIA_MET"}[result.stop_reason]
        return {
            "inputTextTokenCount": result.input_tokens,
            "results": [{"tokenCount": result.output_tokens, "outputText": result.text, "completionReason": reason}],
        }
    if family == "nova":
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": result.text}]}},
            "stopReason": result.stop_reason,
            "usage": _usage(result),
        }
    if family == "llama":
        return {
            "generation": result.text,
            "prompt_token_count": result.input_tokens,
            "generation_token_count": result.output_tokens,
            "stop_reason": "length" if result.stop_reason == "max_tokens" else "stop",
        }
    if family == "mistral":
        return {"outputs": [{"text": result.text, "stop_reason": "length" if result.stop_reason == "max_tokens" else "stop"}]}
    if family == "cohere":
        reason = "MAX_TOKENS" if result.stop_reason == "max_tokens" else "COMPLETE"
        return {
            "id": _hex_id(128),
            "generations": [{"id": _hex_id(128), "text": result.text, "finish_reason": reason}],
            "prompt": None,
        }
    raise ValueError(f"{family} has no text response")


def _hex_id(bits: int) -> str:
    """A random response id: an identifier, not a secret (secrets.token_hex is a system call a
    response, and the batch thread gave up the GIL at each one)."""
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def converse_response(result: TextResult, latency_ms: int) -> dict[str, Any]:
    """A Converse response, the same for every text model."""
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": result.text}]}},
        "stopReason": result.stop_reason,
        "usage": _usage(result),
        "metrics": {"latencyMs": latency_ms},
    }


def embedding_response(result: EmbeddingResult) -> dict[str, Any]:
    """Titan Embeddings v2's native response."""
    return {
        "embedding": result.vector,
        "embeddingsByType": {"float": result.vector},
        "inputTextTokenCount": result.input_tokens,
    }


def _usage(result: TextResult) -> dict[str, int]:
    return {
        "inputTokens": result.input_tokens,
        "outputTokens": result.output_tokens,
        "totalTokens": result.input_tokens + result.output_tokens,
    }
