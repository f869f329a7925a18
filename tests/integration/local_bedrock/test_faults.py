"""Contract: faults are injected only when asked, through the control endpoint, per model or per job."""
from __future__ import annotations

import json
import urllib.error

import pytest
from botocore.exceptions import ClientError

from tests.integration.local_bedrock.conftest import control
from tests.integration.local_bedrock.jobs_kit import (
    CLAUDE, claude_record, create_job, jsonl, put_input, read_manifest, read_output, wait_for,
)

NOVA = "amazon.nova-micro-v1:0"


@pytest.fixture
def input_uri(s3, buckets) -> str:
    given_in, _ = buckets
    return put_input(s3, given_in, "f/input.jsonl", jsonl(claude_record(i) for i in range(100)))


def add_fault(server, **spec) -> dict:
    return control(server, "POST", "/local-bedrock-api/faults", spec)


def test_nothing_is_injected_unless_asked(bedrock, bedrock_server, input_uri, buckets):
    assert control(bedrock_server, "GET", "/local-bedrock-api/faults") == {"faults": []}

    job = wait_for(bedrock, create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1]))

    assert job["status"] == "Completed" and job["errorRecordCount"] == 0


def test_a_failed_fault_ends_the_job_failed_after_part_of_its_records(bedrock, bedrock_server, s3, input_uri, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, outcome="Failed", after_fraction=0.5, failure_message="disk on fire")

    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1])
    job = wait_for(bedrock, arn)

    assert job["status"] == "Failed" and job["message"] == "disk on fire"
    assert job["processedRecordCount"] == 50
    assert len(read_output(s3, buckets[1], arn, "input.jsonl")) == 50


def test_a_partially_completed_fault_leaves_records_unprocessed(bedrock, bedrock_server, s3, input_uri, buckets):
    add_fault(bedrock_server, job_name="partial-*", outcome="PartiallyCompleted", after_fraction=0.6)

    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1], name="partial-1")
    job = wait_for(bedrock, arn)

    assert job["status"] == "PartiallyCompleted"
    assert (job["totalRecordCount"], job["processedRecordCount"]) == (100, 60)
    lines = read_output(s3, buckets[1], arn, "input.jsonl")
    assert len(lines) == 60 and len({line["recordId"] for line in lines}) == 60
    assert read_manifest(s3, buckets[1], arn)["processedRecordCount"] == 60


def test_an_expired_fault_never_starts_the_job(bedrock, bedrock_server, s3, input_uri, buckets):
    add_fault(bedrock_server, job_name="expiring", outcome="Expired")

    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1], name="expiring")
    job = wait_for(bedrock, arn)

    assert job["status"] == "Expired" and job["processedRecordCount"] == 0
    assert s3.list_objects_v2(Bucket=buckets[1]).get("KeyCount", 0) == 0


def test_a_stopped_fault_stops_the_job_with_its_records_so_far(bedrock, bedrock_server, s3, input_uri, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, outcome="Stopped", after_fraction=0.25)

    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1])
    job = wait_for(bedrock, arn)

    assert job["status"] == "Stopped" and job["processedRecordCount"] == 25
    assert len(read_output(s3, buckets[1], arn, "input.jsonl")) == 25


def test_a_record_error_rate_fails_that_share_of_records(bedrock, bedrock_server, s3, input_uri, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, record_error_rate=0.3, record_error_code=429,
              record_error_message="ThrottlingException: too many tokens")

    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1])
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed"
    assert 10 <= job["errorRecordCount"] <= 50
    assert job["errorRecordCount"] + job["successRecordCount"] == 100
    errors = [line for line in read_output(s3, buckets[1], arn, "input.jsonl") if "error" in line]
    assert len(errors) == job["errorRecordCount"]
    assert all(e["error"] == {"errorCode": 429, "errorMessage": "ThrottlingException: too many tokens"} for e in errors)


def test_throttled_creates_fail_then_succeed(bedrock, bedrock_server, input_uri, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, throttle_creates=2)

    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1], name="throttled")
        assert exc.value.response["Error"]["Code"] == "ThrottlingException"
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    arn = create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1], name="throttled")

    assert wait_for(bedrock, arn)["status"] == "Completed"


def test_a_fault_with_times_is_spent_after_that_many_jobs(bedrock, bedrock_server, input_uri, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, outcome="Failed", after_fraction=0.0, times=1)

    first = wait_for(bedrock, create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1]))
    second = wait_for(bedrock, create_job(bedrock, input_uri=input_uri, output_bucket=buckets[1]))

    assert (first["status"], second["status"]) == ("Failed", "Completed")


def test_a_fault_for_one_model_leaves_other_models_alone(bedrock, bedrock_server, s3, buckets):
    add_fault(bedrock_server, model_id=CLAUDE, outcome="Failed")
    records = [{"recordId": f"n{i}", "modelInput": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}
               for i in range(100)]
    uri = put_input(s3, buckets[0], "nova/input.jsonl", jsonl(records))

    job = wait_for(bedrock, create_job(bedrock, input_uri=uri, output_bucket=buckets[1], model=NOVA))

    assert job["status"] == "Completed"


def test_faults_can_be_listed_and_removed(bedrock, bedrock_server):
    fault = add_fault(bedrock_server, model_id=CLAUDE, outcome="Expired")
    assert [f["fault_id"] for f in control(bedrock_server, "GET", "/local-bedrock-api/faults")["faults"]] == [fault["fault_id"]]

    control(bedrock_server, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert control(bedrock_server, "GET", "/local-bedrock-api/faults") == {"faults": []}


def test_a_fault_that_does_nothing_is_rejected(bedrock, bedrock_server):
    with pytest.raises(urllib.error.HTTPError) as exc:
        add_fault(bedrock_server, model_id=CLAUDE)
    assert exc.value.code == 400
    assert b"needs an outcome" in exc.value.read()


def _nova_record(i: int) -> dict:
    return {"recordId": f"q{i:03d}", "modelInput": {"messages": [{"role": "user", "content": [{"text": f"Repeat: word{i}"}]}],
                                                    "inferenceConfig": {"maxTokens": 32, "temperature": 0}}}


def _text(model_output: dict) -> str:
    return model_output["output"]["message"]["content"][0]["text"]


def test_a_wrong_answer_rate_replaces_the_same_answers_in_batch_jobs_and_on_demand(bedrock, bedrock_server, runtime, s3,
                                                                                    buckets):
    add_fault(bedrock_server, model_id=NOVA, wrong_answer_rate=0.3)
    records = [_nova_record(i) for i in range(100)]
    uri = put_input(s3, buckets[0], "wrong/input.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=buckets[1], model=NOVA)
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed" and job["errorRecordCount"] == 0, "a wrong answer is an answer, not an error"
    answers = {line["recordId"]: _text(line["modelOutput"]) for line in read_output(s3, buckets[1], arn, "input.jsonl")}
    wrong = {rid for rid, text in answers.items() if text == "I am not sure."}
    assert 15 <= len(wrong) <= 45
    assert all(f"word{int(rid[1:])}" in text for rid, text in answers.items() if rid not in wrong)
    on_demand = {r["recordId"]: _text(json.loads(runtime.invoke_model(modelId=NOVA, body=json.dumps(r["modelInput"]))
                                                 ["body"])) for r in records[:40]}
    assert {rid for rid, text in on_demand.items() if text == "I am not sure."} == {r for r in wrong if int(r[1:]) < 40}


def test_a_wrong_answer_rate_for_one_model_leaves_other_models_right(bedrock, bedrock_server, runtime):
    add_fault(bedrock_server, model_id=NOVA, wrong_answer_rate=1.0)
    body = json.dumps(_nova_record(1)["modelInput"])

    assert _text(json.loads(runtime.invoke_model(modelId=NOVA, body=body)["body"])) == "I am not sure."
    assert "word1" in _text(json.loads(runtime.invoke_model(modelId="amazon.nova-lite-v1:0", body=body)["body"]))
