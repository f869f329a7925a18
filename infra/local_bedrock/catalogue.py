"""The foundation models the local Bedrock serves, and how a model identifier resolves to one."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Family = Literal["anthropic", "titan-text", "titan-embed", "nova", "llama", "mistral", "cohere"]


@dataclass(frozen=True)
class FoundationModel:
    model_id: str
    name: str  # Bedrock caps modelName at 20 characters
    provider: str
    family: Family
    customizations: tuple[str, ...] = ()

    @property
    def is_embedding(self) -> bool:
        return self.family == "titan-embed"

    @property
    def output_modality(self) -> str:
        return "EMBEDDING" if self.is_embedding else "TEXT"

    def arn(self, region: str) -> str:
        return f"arn:aws:bedrock:{region}::foundation-model/{self.model_id}"


MODELS: tuple[FoundationModel, ...] = (
    FoundationModel("anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku", "Anthropic", "anthropic"),
    FoundationModel("anthropic.claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku", "Anthropic", "anthropic"),
    FoundationModel("anthropic.claude-3-5-sonnet-20240620-v1:0", "Claude 3.5 Sonnet", "Anthropic", "anthropic"),
    FoundationModel("amazon.titan-text-lite-v1", "Titan Text Lite", "Amazon", "titan-text",
                    ("FINE_TUNING", "CONTINUED_PRE_TRAINING")),
    FoundationModel("amazon.titan-text-express-v1", "Titan Text Express", "Amazon", "titan-text",
                    ("FINE_TUNING", "CONTINUED_PRE_TRAINING")),
    FoundationModel("amazon.titan-embed-text-v2:0", "Titan Embeddings V2", "Amazon", "titan-embed"),
    FoundationModel("amazon.nova-micro-v1:0", "Nova Micro", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("amazon.nova-lite-v1:0", "Nova Lite", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("amazon.nova-pro-v1:0", "Nova Pro", "Amazon", "nova", ("FINE_TUNING",)),
    FoundationModel("meta.llama3-1-8b-instruct-v1:0", "Llama 3.1 8B", "Meta", "llama", ("FINE_TUNING",)),
    FoundationModel("meta.llama3-1-70b-instruct-v1:0", "Llama 3.1 70B", "Meta", "llama", ("FINE_TUNING",)),
    FoundationModel("mistral.mistral-7b-instruct-v0:2", "Mistral 7B Instruct", "Mistral AI", "mistral"),
    FoundationModel("mistral.mixtral-8x7b-instruct-v0:1", "Mixtral 8x7B", "Mistral AI", "mistral"),
    FoundationModel("cohere.command-text-v14", "Command", "Cohere", "cohere", ("FINE_TUNING",)),
    FoundationModel("cohere.command-light-text-v14", "Command Light", "Cohere", "cohere", ("FINE_TUNING",)),
)

_BY_ID = {model.model_id: model for model in MODELS}
# Cross-region inference profiles prefix the model id with a geography: us., eu., apac., global.
_PROFILE_PREFIX = re.compile(r"^(?:us|eu|apac|us-gov|global)\.")
_FOUNDATION_ARN = re.compile(r"^arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]+:(?:[0-9]{12})?:(?:foundation-model|inference-profile)/(.+)$")


class UnknownModel(LookupError):
    """The identifier names no model this service serves."""


def resolve(identifier: str) -> FoundationModel:
    """The model behind an id, a foundation-model ARN or an inference-profile id/ARN."""
    model_id = identifier
    match = _FOUNDATION_ARN.match(model_id)
    if match:
        model_id = match.group(1)
    model_id = _PROFILE_PREFIX.sub("", model_id)
    try:
        return _BY_ID[model_id]
    except KeyError:
        raise UnknownModel(identifier) from None

