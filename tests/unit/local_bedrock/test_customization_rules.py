"""Customization rules without a server: hyperparameters, record checks, faults, saved state."""
from __future__ import annotations

import pytest

from infra.local_bedrock import catalogue, hyperparameters
from infra.local_bedrock.customization import CustomizationJob, CustomizationJobStore, check_record
from infra.local_bedrock.errors import BedrockError
from infra.local_bedrock.faults import FaultRegistry, FaultSpec, for_new_customization, take_customization_throttle
from infra.local_bedrock.s3io import JobFailure
from infra.local_bedrock.training import TrainingFaults

TITAN = catalogue.resolve("amazon.titan-text-lite-v1")
COHERE = catalogue.resolve("cohere.command-light-text-v14")
LLAMA = catalogue.resolve("meta.llama3-1-8b-instruct-v1:0")


def test_defaults_are_filled_in_and_given_values_kept_as_strings():
    resolved = hyperparameters.resolve(TITAN, {"epochCount": "3"})

    assert resolved == {"epochCount": "3", "batchSize": "1", "learningRate": "0.00001", "learningRateWarmupSteps": "5"}
    assert hyperparameters.training_arguments(resolved) == hyperparameters.TrainingArguments(3, 1, 1e-5, 5)


@pytest.mark.parametrize(("model", "given"), [
    (TITAN, {"epochCount": "0"}),
    (TITAN, {"learningRate": "1.5"}),
    (TITAN, {"learningRate": "nan"}),
    (TITAN, {"epochCount": "2.5"}),
    (COHERE, {"batchSize": "4"}),
    (COHERE, {"evalPercentage": "60"}),
    (LLAMA, {"batchSize": "2"}),
])
def test_values_out_of_range_or_of_the_wrong_kind_are_refused(model, given):
    with pytest.raises(BedrockError) as raised:
        hyperparameters.resolve(model, given)

    assert raised.value.code == "ValidationException" and next(iter(given)) in raised.value.message


def test_the_edges_of_a_range_are_accepted():
    assert hyperparameters.resolve(TITAN, {"epochCount": "10", "batchSize": "64"})["epochCount"] == "10"
    assert hyperparameters.resolve(COHERE, {"batchSize": "8", "learningRate": "0.1"})["batchSize"] == "8"


def test_a_model_that_cannot_be_customized_has_no_hyperparameters():
    with pytest.raises(BedrockError, match="does not support customization"):
        hyperparameters.resolve(catalogue.resolve("anthropic.claude-3-haiku-20240307-v1:0"), {})


@pytest.mark.parametrize(("line", "kind", "message"), [
    (b'{"prompt": "p"}', "FINE_TUNING", 'no "completion" field'),
    (b'{"prompt": "p", "completion": ""}', "FINE_TUNING", '"completion" is empty'),
    (b'{"input": "text", "extra": 1}', "CONTINUED_PRE_TRAINING", 'the field "extra"'),
    (b'{"prompt": "p", "completion": "c"}', "CONTINUED_PRE_TRAINING", 'no "input" field'),
    (b'"just a string"', "FINE_TUNING", "not a JSON object"),
])
def test_a_bad_record_is_named_by_file_and_line(line, kind, message):
    with pytest.raises(JobFailure) as raised:
        check_record(line, 7, "s3://bucket/train.jsonl", kind)

    assert "Line 7 of s3://bucket/train.jsonl" in str(raised.value) and message in str(raised.value)


def test_a_good_record_is_kept_as_it_is():
    assert check_record(b'{"prompt": "p", "completion": "c"}', 1, "s3://b/k", "FINE_TUNING") == {"prompt": "p", "completion": "c"}


def test_a_customization_fault_does_not_count_as_a_batch_fault():
    registry = FaultRegistry()
    registry.add(FaultSpec(training_outcome="Failed", failure_message="boom"))

    assert registry.for_new_job(model_id=TITAN.model_id, job_name="j").outcome is None
    assert for_new_customization(registry, model_id=TITAN.model_id, job_name="j") == TrainingFaults(
        fail_after_fraction=0.5, failure_message="boom")


def test_a_fault_with_times_is_spent_by_the_jobs_that_take_it():
    registry = FaultRegistry()
    registry.add(FaultSpec(training_diverges=True, times=1))

    assert for_new_customization(registry, model_id=TITAN.model_id, job_name="a").diverge
    assert not for_new_customization(registry, model_id=TITAN.model_id, job_name="b").diverge


def test_customization_throttles_are_separate_from_batch_throttles():
    registry = FaultRegistry()
    registry.add(FaultSpec(throttle_customization_creates=1))

    assert not registry.take_throttle(TITAN.model_id, "j")
    assert take_customization_throttle(registry, model_id=TITAN.model_id, job_name="j")
    assert not take_customization_throttle(registry, model_id=TITAN.model_id, job_name="j")


def test_a_fault_needs_to_do_something():
    with pytest.raises(ValueError):
        FaultSpec(job_name="x")


def new_job(store: CustomizationJobStore, name: str = "job-1", model_name: str = "model-1") -> CustomizationJob:
    params = {"jobName": name, "customModelName": model_name, "roleArn": "arn:aws:iam::123456789012:role/r",
              "trainingDataConfig": {"s3Uri": "s3://b/train.jsonl"}, "outputDataConfig": {"s3Uri": "s3://b/out/"},
              "clientRequestToken": "token-1"}
    return store.create(params, model=TITAN, kind="FINE_TUNING", hyper_parameters=hyperparameters.resolve(TITAN, {}),
                        faults=TrainingFaults(diverge=True), model_name_taken=lambda _: False)


def test_a_saved_job_reads_back_the_same():
    store = CustomizationJobStore(region="us-east-1", account_id="123456789012")
    job = new_job(store)
    job.training_loss = 0.5
    job.stages["validationDetails"].set("Completed")

    restored = CustomizationJobStore(region="us-east-1", account_id="123456789012")
    [again] = restored.load_records(store.to_records())

    assert again.describe("us-east-1") == job.describe("us-east-1") and again.faults == job.faults
    assert restored.by_token("token-1") is again


def test_a_saved_job_whose_base_model_is_gone_is_left_out():
    store = CustomizationJobStore(region="us-east-1", account_id="123456789012")
    record = new_job(store).to_record()

    assert CustomizationJobStore(region="us-east-1", account_id="123456789012").load_records(
        [{**record, "base_model_id": "amazon.gone-v1"}]) == []


def test_arns_follow_bedrock_patterns():
    job = new_job(CustomizationJobStore(region="us-east-1", account_id="123456789012"))

    assert job.job_arn == f"arn:aws:bedrock:us-east-1:123456789012:model-customization-job/{TITAN.model_id}/{job.job_id}"
    assert job.output_model_arn.startswith(f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{TITAN.model_id}/")
    assert len(job.job_id) == len(job.custom_model_id) == 12
