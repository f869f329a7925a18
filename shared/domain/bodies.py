"""Model families and their native request and response bodies (see BEDROCK.md).

A batch record's modelInput is the body InvokeModel (or Converse) would take for that model; it
never names the model: the job does. Each family reads its own response shape back into one
`ExtractedOutput`, so postprocess need not know which model answered.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.domain.evolving import Evolving

Family = Literal["anthropic", "titan-text", "titan-embed", "nova", "llama", "mistral", "cohere"]

ANTHROPIC_VERSION = "bedrock-2023-05-31"

# Prefixes are matched on the model id after any ARN and cross-region profile prefix is removed.
_FAMILY_PREFIXES: tuple[tuple[str, Family], ...] = (
    ("anthropic.", "anthropic"),
    ("amazon.titan-embed-", "titan-embed"),
    ("amazon.titan-text-", "titan-text"),
    ("amazon.titan-tg1-", "titan-text"),
    ("amazon.nova-", "nova"),
    ("meta.llama", "llama"),
    ("mistral.", "mistral"),
    ("cohere.command", "cohere"),
)
SUPPORTED_FAMILIES: tuple[Family, ...] = tuple(dict.fromkeys(f for _, f in _FAMILY_PREFIXES))
# Cross-region inference profiles put a geography before the model id: us.anthropic.claude-...
_PROFILE_PREFIX = re.compile(r"^(us|eu|apac|us-gov|ca|jp|au|global)\.")


class UnsupportedModelError(ValueError):
    """The model id names no family Quarry can build bodies for."""


class InferenceParams(Evolving):
    """Sampling parameters; each family takes the ones it understands, under its own names.
    Unknown ones are refused from people (STRICT) and kept from newer workers (shared/domain/evolving.py)."""

    model_config = ConfigDict(frozen=True)

    max_tokens: int = Field(1024, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    stop_sequences: list[str] = Field(default_factory=list)
    # Embeddings only (Titan embed v2): 256, 512 or 1024, and whether to unit-normalize.
    dimensions: int | None = Field(None, ge=1)
    normalize: bool | None = None


@dataclass(frozen=True, slots=True)
class ExtractedOutput:
    """What postprocess keeps of one model response (a dataclass: built once per row, millions)."""

    text: str | None = None
    embedding: list[float] | None = None
    input_tokens: int = 0
    output_tokens: int = 0


def family_of(model_id: str) -> Family:
    """The family of a model id, foundation-model ARN or inference-profile id/ARN."""
    bare = model_id.strip()
    if bare.startswith("arn:"):
        # arn:aws:bedrock:region:account:foundation-model/anthropic.claude-... (or inference-profile/)
        bare = bare.rsplit("/", 1)[-1]
    bare = _PROFILE_PREFIX.sub("", bare.lower())
    for prefix, family in _FAMILY_PREFIXES:
        if bare.startswith(prefix):
            return family
    raise UnsupportedModelError(
        f"model {model_id!r} belongs to no supported family; supported families: "
        f"{', '.join(SUPPORTED_FAMILIES)} (model ids starting with "
        f"{', '.join(p for p, _ in _FAMILY_PREFIXES)}), optionally as an ARN or with an "
        "inference-profile prefix such as 'us.'"
    )


def foundation_model_id(model_id: str) -> str | None:
    """The foundation model a model id, foundation-model ARN or system inference profile names, as
    ListFoundationModels lists it; None for what that list cannot show (custom and provisioned
    models, application inference profiles)."""
    bare = model_id.strip()
    if bare.startswith("arn:"):
        kind, _, rest = bare.split(":", 5)[-1].partition("/")
        if kind not in ("foundation-model", "inference-profile"):
            return None
        bare = rest
    if "/" in bare:
        return None
    return _PROFILE_PREFIX.sub("", bare)


def build_body(
    family: Family, prompt: str, *, system: str | None = None,
    params: InferenceParams | None = None, converse: bool = False,
) -> dict[str, Any]:
    """The modelInput for one prompt: the Converse shape, or the family's native body."""
    p = params or InferenceParams()
    if converse:
        return _converse_body(prompt, system, p)
    return _NATIVE[family](prompt, system, p)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _converse_body(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"text": prompt}]}]}
    if system:
        body["system"] = [{"text": system}]
    body["inferenceConfig"] = _drop_none({
        "maxTokens": p.max_tokens, "temperature": p.temperature, "topP": p.top_p,
        "stopSequences": p.stop_sequences or None,
    })
    return body


def _anthropic(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    return _drop_none({
        "anthropic_version": ANTHROPIC_VERSION, "max_tokens": p.max_tokens, "system": system or None,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": p.temperature, "top_p": p.top_p, "stop_sequences": p.stop_sequences or None,
    })


def _with_system(prompt: str, system: str | None) -> str:
    # Families without a system slot get it as a leading paragraph of the prompt.
    return f"{system}\n\n{prompt}" if system else prompt


def _titan_text(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    return {"inputText": _with_system(prompt, system), "textGenerationConfig": _drop_none({
        "maxTokenCount": p.max_tokens, "temperature": p.temperature, "topP": p.top_p,
        "stopSequences": p.stop_sequences or None,
    })}


def _titan_embed(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    # Embeddings take no system prompt and no sampling parameters.
    return _drop_none({"inputText": prompt, "dimensions": p.dimensions, "normalize": p.normalize})


def _nova(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    body: dict[str, Any] = {"schemaVersion": "messages-v1",
                            "messages": [{"role": "user", "content": [{"text": prompt}]}]}
    if system:
        body["system"] = [{"text": system}]
    body["inferenceConfig"] = _drop_none({
        "maxTokens": p.max_tokens, "temperature": p.temperature, "topP": p.top_p,
        "stopSequences": p.stop_sequences or None,
    })
    return body


def llama3_prompt(prompt: str, system: str | None) -> str:
    """The Llama 3 chat template, ending where the assistant's answer begins."""
    head = "<|begin_of_text|>"
    if system:
        head += f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
    return (f"{head}<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n")


def _llama(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    return _drop_none({"prompt": llama3_prompt(prompt, system), "max_gen_len": p.max_tokens,
                       "temperature": p.temperature, "top_p": p.top_p})


def _mistral(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    return _drop_none({"prompt": f"<s>[INST] {_with_system(prompt, system)} [/INST]",
                       "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
                       "stop": p.stop_sequences or None})


def _cohere(prompt: str, system: str | None, p: InferenceParams) -> dict[str, Any]:
    return _drop_none({"prompt": _with_system(prompt, system), "max_tokens": p.max_tokens,
                       "temperature": p.temperature, "p": p.top_p,
                       "stop_sequences": p.stop_sequences or None})


_NATIVE = {
    "anthropic": _anthropic, "titan-text": _titan_text, "titan-embed": _titan_embed, "nova": _nova,
    "llama": _llama, "mistral": _mistral, "cohere": _cohere,
}


def extract_output(family: Family, converse: bool, model_output: dict[str, Any]) -> ExtractedOutput:
    """Text or embedding and token counts from one response; missing counts read as 0."""
    o = model_output
    if converse or family == "nova":
        usage = o.get("usage") or {}
        return ExtractedOutput(text=_first_text((o.get("output") or {}).get("message", {}).get("content")),
                               input_tokens=usage.get("inputTokens") or 0,
                               output_tokens=usage.get("outputTokens") or 0)
    if family == "anthropic":
        usage = o.get("usage") or {}
        return ExtractedOutput(text=_first_text(o.get("content")),
                               input_tokens=usage.get("input_tokens") or 0,
                               output_tokens=usage.get("output_tokens") or 0)
    if family == "titan-text":
        results = o.get("results") or [{}]
        return ExtractedOutput(text=results[0].get("outputText"),
                               input_tokens=o.get("inputTextTokenCount") or 0,
                               output_tokens=results[0].get("tokenCount") or 0)
    if family == "titan-embed":
        return ExtractedOutput(embedding=o.get("embedding"), input_tokens=o.get("inputTextTokenCount") or 0)
    if family == "llama":
        return ExtractedOutput(text=o.get("generation"), input_tokens=o.get("prompt_token_count") or 0,
                               output_tokens=o.get("generation_token_count") or 0)
    if family == "mistral":
        # Mistral's native response carries no token counts.
        return ExtractedOutput(text=((o.get("outputs") or [{}])[0]).get("text"))
    if family == "cohere":
        return ExtractedOutput(text=((o.get("generations") or [{}])[0]).get("text"))
    raise UnsupportedModelError(f"no response reader for family {family!r}")


def _first_text(content: Any) -> str | None:
    if type(content) is list and len(content) == 1 and type(content[0]) is dict:
        text = content[0].get("text")  # the common case: one text block
        if type(text) is str:
            return text
    if isinstance(content, list):
        texts = [c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
        return "".join(texts) if texts else None
    return content if isinstance(content, str) else None
