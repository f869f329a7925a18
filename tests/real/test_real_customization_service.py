"""The issue's "done when", through the service as a user does it with boto3: a customization job
fine-tunes SmolLM2 (behind Titan Text Lite) on DialogSum rows, a provisioned throughput serves the
custom model, and it beats its base on held-out rows with a paired bootstrap interval above zero.

Its own file so that `make test` starts it first (it takes minutes); needs the `real` extra and
../shared/data, skipped with the reason otherwise (test_real_customization.py's checks).
"""
from __future__ import annotations

import json
import time

import pytest

from tests.real.test_real_customization import DIALOGSUM, needs_dialogsum, read_rows

pytestmark = pytest.mark.real

TRAIN_ROWS = 200  # as measured: ~2 minutes of training on 2 cores, ROUGE-L 0.19 -> 0.31


def paired_bootstrap_interval(custom: list[float], base: list[float]) -> tuple[float, float]:
    """95% interval of mean(custom) - mean(base), resampling rows (pairs) together."""
    import numpy as np
    from scipy import stats

    def gain(c, b, axis=-1):
        return np.mean(c, axis=axis) - np.mean(b, axis=axis)

    result = stats.bootstrap((np.array(custom), np.array(base)), gain, paired=True, vectorized=True,
                             n_resamples=5000, confidence_level=0.95, rng=np.random.default_rng(20240601))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


TITAN_LITE = "amazon.titan-text-lite-v1"  # Titan takes a batch size of 4; Llama's is fixed at 1
ROLE = "arn:aws:iam::123456789012:role/QuarryBedrockCustomization"
SERVICE_HELD_OUT_ROWS = 40  # one InvokeModel a row (Titan's shape), for custom and base alike
CALLERS = SERVICE_HELD_OUT_ROWS  # concurrent InvokeModel calls, as Quarry's on-demand path sends them


def wait_until(read, done, *, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = read()
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not done after {timeout:.0f}s: {state}")
        time.sleep(1.0)


@pytest.fixture(scope="module")
def real_service(tmp_path_factory):
    import boto3
    from botocore.config import Config

    from infra.processes import start_local_bedrock, start_moto

    logs = tmp_path_factory.mktemp("real-customization-service")
    moto = start_moto(logs)
    bedrock = start_local_bedrock(logs, aws_endpoint=moto.url, args=("--engine", "real"), timeout=120,
                                  env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                       "LOCAL_BEDROCK_DELAY_PROVISIONING": "1",
                                       # every waiting call in one engine call, sorted by length there
                                       "LOCAL_BEDROCK_BATCH_SIZE": str(SERVICE_HELD_OUT_ROWS)})
    # One attempt per call: a retried InvokeModel after a slow first load would only queue again.
    config = Config(read_timeout=600, retries={"total_max_attempts": 1})
    credentials = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    clients = {"s3": boto3.client("s3", endpoint_url=moto.url, **credentials),
               "bedrock": boto3.client("bedrock", endpoint_url=bedrock.url, config=config, **credentials),
               "runtime": boto3.client("bedrock-runtime", endpoint_url=bedrock.url, config=config, **credentials)}
    yield clients
    bedrock.stop()
    moto.stop()


def titan_summaries(runtime, model_id: str, rows: list[dict]) -> list[str]:
    """Greedy summaries of the rows by `model_id`, one InvokeModel a row in Titan's shape, CALLERS
    at a time: the service generates concurrent calls together (85 s for the 80, two model loads
    included, against about 250 s one call at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(row: dict) -> str:
        body = {"inputText": row["prompt"], "textGenerationConfig": {"maxTokenCount": 64, "temperature": 0}}
        answer = json.loads(runtime.invoke_model(modelId=model_id, body=json.dumps(body))["body"].read())
        return answer["results"][0]["outputText"]

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        return list(pool.map(one, rows))


def rouge_l_of(texts: list[str], rows: list[dict]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(row["completion"], text)["rougeL"].fmeasure for row, text in zip(rows, texts)]


@needs_dialogsum
def test_a_customization_job_on_dialogsum_served_by_provisioned_throughput_beats_its_base(real_service):
    s3, bedrock, runtime = real_service["s3"], real_service["bedrock"], real_service["runtime"]
    s3.create_bucket(Bucket="quarry-tuning")
    train = read_rows(DIALOGSUM / "train.jsonl", TRAIN_ROWS)
    s3.put_object(Bucket="quarry-tuning", Key="dialogsum/train.jsonl",
                  Body="".join(json.dumps(row) + "\n" for row in train).encode())
    held_out = read_rows(DIALOGSUM / "validation.jsonl", SERVICE_HELD_OUT_ROWS)

    job_arn = bedrock.create_model_customization_job(
        jobName="dialogsum-summaries", customModelName="smollm2-dialogsum", roleArn=ROLE,
        baseModelIdentifier=TITAN_LITE, customizationType="FINE_TUNING",
        trainingDataConfig={"s3Uri": "s3://quarry-tuning/dialogsum/train.jsonl"},
        outputDataConfig={"s3Uri": "s3://quarry-tuning/customization/"},
        hyperParameters={"epochCount": "1", "batchSize": "4", "learningRate": "0.0001",
                         "learningRateWarmupSteps": "5"},
    )["jobArn"]
    job = wait_until(lambda: bedrock.get_model_customization_job(jobIdentifier=job_arn),
                     lambda j: j["status"] in ("Completed", "Failed", "Stopped"), timeout=3600, what="fine-tune")
    assert job["status"] == "Completed", job.get("failureMessage")
    metrics = s3.get_object(Bucket="quarry-tuning", Key=f"customization/model-customization-job-{job_arn.rsplit('/', 1)[-1]}"
                                                        "/training_artifacts/step_wise_training_metrics.csv")
    steps = metrics["Body"].read().decode().strip().splitlines()[1:]
    assert len(steps) == TRAIN_ROWS // 4 and steps[0].startswith("0,1,")  # step 0 of epoch 1, as Bedrock writes it
    pt_arn = bedrock.create_provisioned_model_throughput(
        modelUnits=1, provisionedModelName="smollm2-dialogsum-pt", modelId=job["outputModelArn"])["provisionedModelArn"]
    wait_until(lambda: bedrock.get_provisioned_model_throughput(provisionedModelId=pt_arn),
               lambda pt: pt["status"] != "Creating", timeout=120, what="provisioning")
    try:
        started = time.monotonic()
        custom = rouge_l_of(titan_summaries(runtime, pt_arn, held_out), held_out)
        base = rouge_l_of(titan_summaries(runtime, TITAN_LITE, held_out), held_out)
        generated_s = time.monotonic() - started
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=pt_arn)
    low, high = paired_bootstrap_interval(custom, base)

    took = (job["endTime"] - job["creationTime"]).total_seconds()
    print(f"\nthrough the service: job Completed in {took:.0f} s (training loss "
          f"{job['trainingMetrics']['trainingLoss']:.3f}); ROUGE-L on {SERVICE_HELD_OUT_ROWS} held-out rows: "
          f"base {sum(base) / len(base):.3f}, custom {sum(custom) / len(custom):.3f}, "
          f"95% CI of the gain [{low:+.3f}, {high:+.3f}]; {2 * SERVICE_HELD_OUT_ROWS} summaries in {generated_s:.0f} s")
    assert low > 0, f"the custom model's ROUGE-L gain is not significant: 95% CI [{low:+.3f}, {high:+.3f}]"

