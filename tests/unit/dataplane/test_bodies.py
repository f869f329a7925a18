"""Model families: ids map to families; each family's body and response shape."""
from __future__ import annotations

import orjson
import pytest

from shared.domain.bodies import (
    ANTHROPIC_VERSION, ExtractedOutput, InferenceParams, UnsupportedModelError, build_body, extract_output,
    family_of,
)

PARAMS = InferenceParams(max_tokens=50, temperature=0.2, top_p=0.9)


@pytest.mark.parametrize("model_id,family", [
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic"),
    ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "anthropic"),
    ("global.anthropic.claude-sonnet-4-20250514-v1:0", "anthropic"),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1", "titan-text"),
    ("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.amazon.nova-lite-v1:0", "nova"),
    ("amazon.titan-embed-text-v2:0", "titan-embed"),
    ("apac.meta.llama3-2-3b-instruct-v1:0", "llama"),
    ("mistral.mistral-7b-instruct-v0:2", "mistral"),
    ("cohere.command-text-v14", "cohere"),
])
def test_given_a_model_id_when_classified_then_its_family_is_found(model_id, family):
    assert family_of(model_id) == family


def test_given_an_unknown_model_when_classified_then_the_error_lists_supported_families():
    with pytest.raises(UnsupportedModelError, match=r"'acme.gpt-9'.*anthropic, titan-embed, titan-text, nova, llama, mistral, cohere"):
        family_of("acme.gpt-9")


def test_given_anthropic_when_building_then_it_is_a_messages_body():
    assert build_body("anthropic", "hi", system="be brief", params=PARAMS) == {
        "anthropic_version": ANTHROPIC_VERSION, "max_tokens": 50, "system": "be brief",
        "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "top_p": 0.9}


def test_given_titan_text_when_building_then_it_has_a_generation_config():
    assert build_body("titan-text", "hi", params=PARAMS) == {
        "inputText": "hi", "textGenerationConfig": {"maxTokenCount": 50, "temperature": 0.2, "topP": 0.9}}


def test_given_titan_embed_when_building_then_only_text_dimensions_and_normalize_are_sent():
    body = build_body("titan-embed", "hi", params=InferenceParams(dimensions=256, normalize=True))
    assert body == {"inputText": "hi", "dimensions": 256, "normalize": True}


def test_given_nova_when_building_then_it_uses_messages_v1():
    assert build_body("nova", "hi", system="sys", params=PARAMS) == {
        "schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "system": [{"text": "sys"}], "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9}}


def test_given_llama_when_building_then_the_prompt_uses_the_llama3_chat_template():
    body = build_body("llama", "hi", system="sys", params=PARAMS)
    assert body["prompt"] == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
                              "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
                              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert body["max_gen_len"] == 50


def test_given_mistral_when_building_then_the_prompt_is_wrapped_in_inst_tags():
    assert build_body("mistral", "hi", params=PARAMS)["prompt"] == "<s>[INST] hi [/INST]"


def test_given_cohere_when_building_then_top_p_is_sent_as_p():
    assert build_body("cohere", "hi", params=PARAMS) == {"prompt": "hi", "max_tokens": 50, "temperature": 0.2, "p": 0.9}


def test_given_converse_when_building_then_the_body_is_the_converse_shape_for_any_family():
    assert build_body("llama", "hi", system="sys", params=PARAMS, converse=True) == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}], "system": [{"text": "sys"}],
        "inferenceConfig": {"maxTokens": 50, "temperature": 0.2, "topP": 0.9}}


@pytest.mark.parametrize("family", ["anthropic", "titan-text", "titan-embed", "nova", "llama", "mistral", "cohere"])
@pytest.mark.parametrize("converse", [False, True])
def test_given_any_body_when_built_then_it_does_not_name_the_model(family, converse):
    assert b"modelId" not in orjson.dumps(build_body(family, "hi", converse=converse))


@pytest.mark.parametrize("family,converse,output,expected", [
    ("anthropic", False, {"content": [{"type": "text", "text": "A"}], "usage": {"input_tokens": 3, "output_tokens": 4}},
     ExtractedOutput(text="A", input_tokens=3, output_tokens=4)),
    ("titan-text", False, {"inputTextTokenCount": 3, "results": [{"outputText": "A", "tokenCount": 4}]},
     ExtractedOutput(text="A", input_tokens=3, output_tokens=4)),
    ("titan-embed", False, {"embedding": [0.5, -1.0], "inputTextTokenCount": 3},
     ExtractedOutput(embedding=[0.5, -1.0], input_tokens=3)),
    ("nova", False, {"output": {"message": {"content": [{"text": "A"}]}}, "usage": {"inputTokens": 3, "outputTokens": 4}},
     ExtractedOutput(text="A", input_tokens=3, output_tokens=4)),
    ("llama", False, {"generation": "A", "prompt_token_count": 3, "generation_token_count": 4},
     ExtractedOutput(text="A", input_tokens=3, output_tokens=4)),
    ("mistral", False, {"outputs": [{"text": "A", "stop_reason": "stop"}]}, ExtractedOutput(text="A")),
    ("cohere", False, {"generations": [{"text": "A"}]}, ExtractedOutput(text="A")),
    ("mistral", True, {"output": {"message": {"role": "assistant", "content": [{"text": "A"}]}},
                       "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}},
     ExtractedOutput(text="A", input_tokens=3, output_tokens=4)),
])
def test_given_a_family_response_when_extracted_then_text_and_tokens_are_read(family, converse, output, expected):
    assert extract_output(family, converse, output) == expected
