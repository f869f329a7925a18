"""Family bodies: validation in Bedrock's words, and every family's response shape."""
from __future__ import annotations

import pytest

from infra.local_bedrock import catalogue, families
from infra.local_bedrock.engines import TextResult
from infra.local_bedrock.errors import BedrockError

RESULT = TextResult("Tuesday.", input_tokens=12, output_tokens=3, stop_reason="max_tokens")


def model(family: str) -> catalogue.FoundationModel:
    return next(m for m in catalogue.MODELS if m.family == family)


def test_an_anthropic_body_becomes_a_chat_with_its_system_prompt():
    body = families.parse_body(model("anthropic"), {
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 20, "system": "Be brief.", "stop_sequences": ["END"],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}],
    })

    request = families.text_request(body)

    assert request.messages == (("user", "Hi"), ("assistant", "Yo"))
    assert (request.system, request.max_tokens, request.stop_sequences) == ("Be brief.", 20, ("END",))


def test_llama_and_mistral_prompts_lose_their_template_markers():
    llama = families.text_request(families.parse_body(model("llama"), {
        "prompt": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\nWhat is 2+2?<|eot_id|>"}))
    mistral = families.text_request(families.parse_body(model("mistral"), {"prompt": "<s>[INST] Name a colour [/INST]"}))

    assert llama.messages == (("user", "What is 2+2?"),)
    assert mistral.messages == (("user", "Name a colour"),)


def test_a_missing_key_is_named_in_bedrocks_words():
    with pytest.raises(BedrockError) as exc:
        families.parse_body(model("titan-text"), {"textGenerationConfig": {}})

    assert exc.value.code == "ValidationException"
    assert exc.value.message == ("Malformed input request: #: required key [inputText] not found, "
                                 "please reformat your input and try again.")


def test_a_nested_extra_key_is_named_with_its_path():
    with pytest.raises(BedrockError) as exc:
        families.parse_body(model("titan-text"), {"inputText": "x", "textGenerationConfig": {"maxTokens": 5}})

    assert "#/textGenerationConfig: extraneous key [maxTokens] is not permitted" in exc.value.message


def test_a_body_that_is_not_an_object_is_rejected():
    with pytest.raises(BedrockError):
        families.parse_body(model("nova"), ["not", "an", "object"])


@pytest.mark.parametrize("family, read", [
    ("anthropic", lambda r: (r["content"][0]["text"], r["stop_reason"], r["usage"]["output_tokens"])),
    ("titan-text", lambda r: (r["results"][0]["outputText"], r["results"][0]["completionReason"], r["results"][0]["tokenCount"])),
    ("nova", lambda r: (r["output"]["message"]["content"][0]["text"], r["stopReason"], r["usage"]["outputTokens"])),
    ("llama", lambda r: (r["generation"], r["stop_reason"], r["generation_token_count"])),
    ("mistral", lambda r: (r["outputs"][0]["text"], r["outputs"][0]["stop_reason"], 3)),
    ("cohere", lambda r: (r["generations"][0]["text"], r["generations"][0]["finish_reason"], 3)),
])
def test_each_family_reports_text_stop_reason_and_tokens_in_its_own_words(family, read):
    text, reason, tokens = read(families.text_response(model(family), RESULT))

    assert text == "Tuesday." and tokens == 3
    assert reason in {"max_tokens", "LENGTH", "length", "MAX_TOKENS"}


def test_converse_usage_totals_input_and_output():
    response = families.converse_response(RESULT, latency_ms=7)

    assert response["usage"] == {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}
    assert response["metrics"] == {"latencyMs": 7}


def test_embedding_models_do_not_converse():
    with pytest.raises(BedrockError) as exc:
        families.parse_converse(model("titan-embed"), {"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    assert "does not support the Converse operation" in exc.value.message
