"""Contract: InvokeModel, Converse and the model catalogue, per family, as Bedrock answers them."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

USER = "Summarise: the meeting moved to Tuesday because the room was booked."

# One valid native body per family, and what its response must look like.
FAMILIES = {
    "anthropic.claude-3-5-haiku-20241022-v1:0": (
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "system": "Be brief.",
         "messages": [{"role": "user", "content": [{"type": "text", "text": USER}]}]},
        lambda r: (r["content"][0]["text"], r["usage"]["input_tokens"], r["usage"]["output_tokens"]),
    ),
    "amazon.titan-text-express-v1": (
        {"inputText": USER, "textGenerationConfig": {"maxTokenCount": 100, "temperature": 0}},
        lambda r: (r["results"][0]["outputText"], r["inputTextTokenCount"], r["results"][0]["tokenCount"]),
    ),
    "amazon.nova-pro-v1:0": (
        {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": USER}]}],
         "inferenceConfig": {"maxTokens": 100, "temperature": 0.2}},
        lambda r: (r["output"]["message"]["content"][0]["text"], r["usage"]["inputTokens"], r["usage"]["outputTokens"]),
    ),
    "meta.llama3-1-8b-instruct-v1:0": (
        {"prompt": f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n{USER}<|eot_id|>", "max_gen_len": 100},
        lambda r: (r["generation"], r["prompt_token_count"], r["generation_token_count"]),
    ),
    "mistral.mistral-7b-instruct-v0:2": (
        {"prompt": f"<s>[INST] {USER} [/INST]", "max_tokens": 100},
        lambda r: (r["outputs"][0]["text"], 1, 1),
    ),
    "cohere.command-text-v14": (
        {"prompt": USER, "max_tokens": 100, "p": 0.5},
        lambda r: (r["generations"][0]["text"], 1, 1),
    ),
}


@pytest.mark.parametrize("model_id", list(FAMILIES))
def test_invoke_model_answers_in_the_familys_native_shape_with_usage(runtime, model_id):
    body, read = FAMILIES[model_id]

    response = runtime.invoke_model(modelId=model_id, body=json.dumps(body), contentType="application/json")

    text, input_tokens, output_tokens = read(json.loads(response["body"]))
    assert response["contentType"] == "application/json"
    assert text and input_tokens > 0 and output_tokens > 0
    assert "Tuesday" in text, "the fast engine derives its output from the input"


def test_titan_embeddings_answer_with_a_normalised_vector_of_the_asked_size(runtime):
    response = runtime.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                                    body=json.dumps({"inputText": USER, "dimensions": 512, "normalize": True}))

    body = json.loads(response["body"])
    assert len(body["embedding"]) == 512 and body["inputTextTokenCount"] > 0
    assert abs(sum(v * v for v in body["embedding"]) - 1.0) < 1e-6


@pytest.mark.parametrize("model_id, body, complaint", [
    ("anthropic.claude-3-haiku-20240307-v1:0", {"prompt": "hi"}, "required key [anthropic_version] not found"),
    ("anthropic.claude-3-haiku-20240307-v1:0",
     {"anthropic_version": "bedrock-2023-05-31", "max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]},
     "#/max_tokens"),
    ("amazon.titan-text-lite-v1", {"inputText": "hi", "foo": 1}, "extraneous key [foo] is not permitted"),
    ("amazon.titan-embed-text-v2:0", {"inputText": "hi", "dimensions": 300}, "#/dimensions"),
    ("amazon.nova-micro-v1:0", {"messages": [{"role": "user", "content": "not a list"}]}, "#/messages/0/content"),
    ("meta.llama3-1-70b-instruct-v1:0", {"inputText": "hi"}, "required key [prompt] not found"),
    ("mistral.mixtral-8x7b-instruct-v0:1", {"prompt": "hi", "max_tokens": 0}, "#/max_tokens"),
    ("cohere.command-light-text-v14", {"messages": []}, "required key [prompt] not found"),
])
def test_a_body_of_the_wrong_shape_is_a_validation_exception(runtime, model_id, body, complaint):
    with pytest.raises(ClientError) as exc:
        runtime.invoke_model(modelId=model_id, body=json.dumps(body))

    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert complaint in exc.value.response["Error"]["Message"]


def test_a_body_that_is_not_json_is_a_validation_exception(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.invoke_model(modelId="amazon.titan-text-lite-v1", body=b"{not json")
    assert exc.value.response["Error"]["Code"] == "ValidationException"


def test_an_unknown_model_is_a_validation_exception(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.invoke_model(modelId="acme.nothing-v1", body=b"{}")
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert "acme.nothing-v1" in exc.value.response["Error"]["Message"]


@pytest.mark.parametrize("model_id", [m for m in FAMILIES] + ["us.anthropic.claude-3-5-haiku-20241022-v1:0"])
def test_converse_answers_every_text_model_in_converse_shape(runtime, model_id):
    response = runtime.converse(
        modelId=model_id,
        system=[{"text": "Be brief."}],
        messages=[{"role": "user", "content": [{"text": USER}]}],
        inferenceConfig={"maxTokens": 50, "temperature": 0.0},
    )

    assert response["output"]["message"]["role"] == "assistant"
    assert "Tuesday" in response["output"]["message"]["content"][0]["text"]
    assert response["stopReason"] in ("end_turn", "max_tokens")
    usage = response["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0


def test_converse_stops_at_max_tokens(runtime):
    response = runtime.converse(modelId="amazon.nova-lite-v1:0",
                                messages=[{"role": "user", "content": [{"text": USER}]}],
                                inferenceConfig={"maxTokens": 3})

    assert response["stopReason"] == "max_tokens" and response["usage"]["outputTokens"] == 3


def test_converse_with_an_embedding_model_is_a_validation_exception(runtime):
    with pytest.raises(ClientError) as exc:
        runtime.converse(modelId="amazon.titan-embed-text-v2:0", messages=[{"role": "user", "content": [{"text": "x"}]}])
    assert exc.value.response["Error"]["Code"] == "ValidationException"


# --- the catalogue ---------------------------------------------------------------------------------
def test_list_foundation_models_serves_every_family(bedrock):
    models = bedrock.list_foundation_models()["modelSummaries"]

    ids = {m["modelId"] for m in models}
    assert set(FAMILIES) | {"amazon.titan-embed-text-v2:0"} <= ids
    assert {m["modelLifecycle"]["status"] for m in models} == {"ACTIVE", "LEGACY"}


def test_list_foundation_models_filters_by_provider_and_modality(bedrock):
    embeddings = bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    anthropic = bedrock.list_foundation_models(byProvider="Anthropic")["modelSummaries"]
    tunable = bedrock.list_foundation_models(byCustomizationType="FINE_TUNING")["modelSummaries"]

    assert [m["modelId"] for m in embeddings] == ["amazon.titan-embed-text-v2:0"]
    assert anthropic and all(m["providerName"] == "Anthropic" for m in anthropic)
    assert tunable and all("FINE_TUNING" in m["customizationsSupported"] for m in tunable)


def test_get_foundation_model_by_id_and_by_arn(bedrock):
    by_id = bedrock.get_foundation_model(modelIdentifier="amazon.nova-lite-v1:0")["modelDetails"]
    by_arn = bedrock.get_foundation_model(modelIdentifier=by_id["modelArn"])["modelDetails"]

    assert by_id == by_arn and by_id["providerName"] == "Amazon"


def test_get_an_unknown_foundation_model_is_not_found(bedrock):
    with pytest.raises(ClientError) as exc:
        bedrock.get_foundation_model(modelIdentifier="acme.nothing-v1")
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_concurrent_calls_each_get_their_own_answer_and_a_bad_body_fails_alone(bedrock_server):
    """Concurrent calls of one model are generated together (coalesce.py): answers must not cross."""
    client = boto3.client("bedrock-runtime", endpoint_url=bedrock_server.url)
    cities = [f"City{i:02d}" for i in range(24)]

    def ask(city: str) -> str:
        body = {"inputText": f"Summarise: the meeting moved to {city} on Tuesday.",
                "textGenerationConfig": {"maxTokenCount": 60, "temperature": 0}}
        if city == "City07":
            body["textGenerationConfig"]["maxTokenCount"] = -1  # out of range: this call alone fails
        answer = json.loads(client.invoke_model(modelId="amazon.titan-text-lite-v1", body=json.dumps(body))["body"].read())
        return answer["results"][0]["outputText"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        futures = {city: pool.submit(ask, city) for city in cities}
    for city, future in futures.items():
        if city == "City07":
            with pytest.raises(ClientError) as exc:
                future.result()
            assert exc.value.response["Error"]["Code"] == "ValidationException"
        else:
            text = future.result()
            assert city in text and not any(other in text for other in cities if other != city), (city, text)
