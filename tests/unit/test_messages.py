"""Every message on the wire, pinned as example JSON and parsed through its queue's union."""
from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from shared.domain.spec import resolve_spec
from shared.errors import InvalidRunSpec
from shared.messages import (
    NOTIFY_INBOX, POLL_INBOX, POSTPROCESS_INBOX, PREPROCESS_INBOX, SUBMIT_INBOX, BatchRequest, BatchRequested,
    BedrockJobStateChanged, CancelRun, CustomizationJobStateChanged, CustomizationRequested, HostingSwept, CheckJob, CollectRun, EvaluationRequested, RunFinished, S3ObjectCreated, StartRun, SubmitJob,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
CORRELATION = "fedcba9876543210fedcba9876543210"

START_RUN = {
    "schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "StartRun",
    "input_uri": "s3://quarry-inputs/incoming/summarize/reviews.csv",
    "spec": {"model_id": "anthropic.claude-3-haiku-20240307-v1:0", "template": "Summarize: {{ text }}",
             "system": None, "params": {"max_tokens": 200, "temperature": 0.2, "top_p": None, "stop_sequences": [],
                                        "dimensions": None, "normalize": None},
             "invocation": "InvokeModel", "output_format": "csv", "recipients": ["ops@example.com"],
             "name": "reviews", "cache": "off", "dry_run": False, "budget_usd": None, "deadline": None,
             "stuck_after_s": None, "output_schema": None, "extract": "first_object", "base_model_id": None},
    "origin": "cli", "source_key": f"cli:{RUN_ID}", "request_id": None,
    "kind": "batch", "evaluation": None, "parent_run_id": None, "customization": None, "validate_only": False,
}
SUBMIT_JOB = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "SubmitJob",
              "job_key": "00003-0", "seq": 2, "wake": False}
CANCEL_RUN = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "CancelRun"}
CHECK_JOB = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "CheckJob",
             "job_key": "00003-1", "seq": 7}
COLLECT_RUN = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "CollectRun"}
RUN_FINISHED = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "RunFinished",
                "outcome": "PARTIAL"}

# EventBridge's envelopes as AWS sends them (from the S3 and Bedrock user guides' examples).
S3_OBJECT_CREATED = {
    "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created",
    "source": "aws.s3", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:s3:::quarry-inputs"],
    "detail": {"version": "0", "bucket": {"name": "quarry-inputs"},
               "object": {"key": "incoming/summarize/my+reviews%282%29.csv", "size": 5120,
                          "etag": "b1946ac92492d2347c6235b4d2611184", "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                          "sequencer": "617f08299329d189"},
               "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012", "source-ip-address": "1.2.3.4",
               "reason": "PutObject"},
}
BATCH_REQUESTED = {
    "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "detail-type": "Quarry Batch Requested",
    "source": "com.example.crm", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": [],
    "detail": {"input_uri": "s3://quarry-inputs/requests/tickets.jsonl", "profile": "summarize",
               "spec": {"params": {"max_tokens": 64}, "recipients": ["crm@example.com"]}, "request_id": "req-42"},
}
EVALUATION_REQUESTED = {
    "version": "0", "id": "0c9d2a58-7b3e-4f44-9d1c-3c8b7e2f6a01", "detail-type": "Quarry Evaluation Requested",
    "source": "com.example.mlops", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": [],
    "detail": {"config_uri": "s3://quarry-inputs/evaluations/trivia.yaml", "request_id": "eval-7"},
}
CUSTOMIZATION_REQUESTED = {
    "version": "0", "id": "3f1e6b0a-2c4d-4e8f-9a7b-5d6c1e2f3a4b", "detail-type": "Quarry Customization Requested",
    "source": "com.example.mlops", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": [],
    "detail": {"spec_uri": "s3://quarry-inputs/customizations/support.yaml", "request_id": "tune-3"},
}
# As the Bedrock user guide's EventBridge example shows it.
CUSTOMIZATION_JOB_STATE_CHANGED = {
    "version": "0", "id": "b2c3d4e5-6789-01ab-cdef-EXAMPLE22222", "detail-type": "Model Customization Job State Change",
    "source": "aws.bedrock", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-micro-v1:0/abcdefgh"],
    "detail": {"version": "0.0", "jobName": f"quarry-{RUN_ID}-customization",
               "jobArn": "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-micro-v1:0/abcdefgh",
               "outputModelName": "support-v1", "outputModelArn": "arn:aws:bedrock:us-east-1:123456789012:custom-model/x",
               "roleArn": "arn:aws:iam::123456789012:role/quarry-bedrock-batch", "jobStatus": "Completed",
               "customizationType": "FINE_TUNING", "baseModelArn": "arn:aws:bedrock:us-east-1::foundation-model/x"},
}
HOSTING_SWEPT = {"schema_version": 1, "run_id": RUN_ID, "correlation_id": CORRELATION, "type": "HostingSwept",
                 "hosting_arn": "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
                 "hosting_name": f"quarry-{RUN_ID}-hosting", "reason": "its run failed", "hourly_usd": 14.5}
BEDROCK_JOB_STATE_CHANGED = {
    "version": "0", "id": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "detail-type": "Batch Inference Job State Change",
    "source": "aws.bedrock", "account": "123456789012", "time": "2024-11-12T00:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz"],
    "detail": {"version": "0.0", "accountId": "123456789012", "batchJobName": f"quarry-{RUN_ID}-00003-0",
               "batchJobArn": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghwxyz",
               "batchModelId": "anthropic.claude-3-haiku-20240307-v1:0", "status": "Completed",
               "failureMessage": "", "processedRecordCount": 120, "successRecordCount": 118, "errorRecordCount": 2},
}


@pytest.mark.parametrize("inbox,example,message_type", [
    (PREPROCESS_INBOX, START_RUN, StartRun),
    (PREPROCESS_INBOX, S3_OBJECT_CREATED, S3ObjectCreated),
    (PREPROCESS_INBOX, BATCH_REQUESTED, BatchRequested),
    (PREPROCESS_INBOX, EVALUATION_REQUESTED, EvaluationRequested),
    (SUBMIT_INBOX, SUBMIT_JOB, SubmitJob),
    (SUBMIT_INBOX, CANCEL_RUN, CancelRun),
    (POLL_INBOX, CHECK_JOB, CheckJob),
    (POLL_INBOX, BEDROCK_JOB_STATE_CHANGED, BedrockJobStateChanged),
    (POSTPROCESS_INBOX, COLLECT_RUN, CollectRun),
    (NOTIFY_INBOX, RUN_FINISHED, RunFinished),
    (PREPROCESS_INBOX, CUSTOMIZATION_REQUESTED, CustomizationRequested),
    (POLL_INBOX, CUSTOMIZATION_JOB_STATE_CHANGED, CustomizationJobStateChanged),
    (NOTIFY_INBOX, HOSTING_SWEPT, HostingSwept),
], ids=lambda value: value.__name__ if isinstance(value, type) else None)
def test_given_example_json_when_its_queue_parses_it_then_it_is_the_right_message(inbox, example, message_type):
    message = inbox.validate_json(orjson.dumps(example))

    assert type(message) is message_type


@pytest.mark.parametrize("example", [START_RUN, SUBMIT_JOB, CANCEL_RUN, CHECK_JOB, COLLECT_RUN, RUN_FINISHED,
                                     HOSTING_SWEPT],
                         ids=lambda example: example["type"])
def test_given_one_of_quarrys_messages_when_serialized_then_it_is_exactly_the_pinned_json(example):
    message = {"StartRun": PREPROCESS_INBOX, "SubmitJob": SUBMIT_INBOX, "CancelRun": SUBMIT_INBOX,
               "CheckJob": POLL_INBOX, "CollectRun": POSTPROCESS_INBOX,
               "RunFinished": NOTIFY_INBOX, "HostingSwept": NOTIFY_INBOX}[example["type"]].validate_python(example)

    assert orjson.loads(message.model_dump_json()) == example


def test_given_an_s3_event_when_parsed_then_bucket_key_and_etag_are_read_from_awss_field_names():
    event = PREPROCESS_INBOX.validate_json(orjson.dumps(S3_OBJECT_CREATED))

    assert (event.detail.bucket.name, event.detail.object.key, event.detail.object.etag) == (
        "quarry-inputs", "incoming/summarize/my+reviews%282%29.csv", "b1946ac92492d2347c6235b4d2611184")


def test_given_a_bedrock_event_when_parsed_then_the_job_name_arn_and_status_are_read():
    event = POLL_INBOX.validate_json(orjson.dumps(BEDROCK_JOB_STATE_CHANGED))

    assert (event.detail.batchJobName, event.detail.status) == (f"quarry-{RUN_ID}-00003-0", "Completed")
    assert event.detail.batchJobArn.endswith("/abcdefghwxyz")


def test_given_a_batch_request_when_its_detail_is_read_then_its_overrides_and_request_id_are_kept():
    event = PREPROCESS_INBOX.validate_json(orjson.dumps(BATCH_REQUESTED))

    request = BatchRequest.model_validate(event.detail)

    assert (request.profile, request.request_id) == ("summarize", "req-42")
    assert request.spec.params == {"max_tokens": 64}


def test_given_a_batch_request_whose_input_is_not_on_s3_when_its_detail_is_read_then_validation_fails():
    with pytest.raises(ValidationError, match="input_uri"):
        BatchRequest.model_validate({**BATCH_REQUESTED["detail"], "input_uri": "/tmp/x.csv"})


@pytest.mark.parametrize("inbox,bad", [
    (SUBMIT_INBOX, {"type": "SubmitJob", "run_id": RUN_ID}),  # no job_key
    (SUBMIT_INBOX, {**SUBMIT_JOB, "schema_version": 2}),
    (SUBMIT_INBOX, CHECK_JOB),  # a message for another queue
    (POLL_INBOX, {"type": "JobChecked", "run_id": RUN_ID}),
    (NOTIFY_INBOX, {**RUN_FINISHED, "outcome": "DONE"}),
    (PREPROCESS_INBOX, {**S3_OBJECT_CREATED, "detail-type": "Object Deleted"}),
    (POLL_INBOX, {**BEDROCK_JOB_STATE_CHANGED, "detail": {"status": "Completed"}}),
], ids=["missing-field", "future-schema", "wrong-queue", "unknown-type", "bad-outcome",
        "unrouted-detail-type", "bedrock-detail-without-job"])
def test_given_a_message_with_the_wrong_schema_when_parsed_then_validation_fails(inbox, bad):
    with pytest.raises(ValidationError):
        inbox.validate_json(orjson.dumps(bad))


def test_given_an_url_encoded_s3_key_when_read_then_both_the_key_as_sent_and_decoded_are_candidates():
    event = S3ObjectCreated.model_validate(S3_OBJECT_CREATED)

    assert event.detail.object.candidate_keys() == [
        "incoming/summarize/my+reviews%282%29.csv", "incoming/summarize/my reviews(2).csv"]


def test_given_a_plain_s3_key_when_read_then_it_is_the_only_candidate():
    event = S3ObjectCreated.model_validate(
        {**S3_OBJECT_CREATED, "detail": {"bucket": {"name": "quarry-inputs"},
                                         "object": {"key": "incoming/summarize/reviews.csv"}}})

    assert event.detail.object.candidate_keys() == ["incoming/summarize/reviews.csv"]


# --- rolling deploys: workers must not lose fields they do not know -----------------------------------
@pytest.mark.parametrize("inbox,example", [
    (PREPROCESS_INBOX, START_RUN), (SUBMIT_INBOX, SUBMIT_JOB), (SUBMIT_INBOX, CANCEL_RUN), (POLL_INBOX, CHECK_JOB),
    (POSTPROCESS_INBOX, COLLECT_RUN), (NOTIFY_INBOX, RUN_FINISHED),
], ids=lambda value: value["type"] if isinstance(value, dict) else None)
def test_given_a_message_from_a_newer_worker_when_parsed_and_sent_on_then_its_unknown_fields_go_with_it(inbox, example):
    newer = {**example, "priority": "high", "lineage": {"parent": "abc"}}

    message = inbox.validate_json(orjson.dumps(newer))

    assert orjson.loads(message.model_dump_json()) == newer


def test_given_a_start_run_whose_spec_has_a_field_this_worker_does_not_know_then_the_spec_keeps_it():
    newer = {**START_RUN, "spec": {**START_RUN["spec"], "guardrail": "g-1",
                                   "params": {**START_RUN["spec"]["params"], "top_k": 5}}}

    message = PREPROCESS_INBOX.validate_json(orjson.dumps(newer))

    assert orjson.loads(message.model_dump_json()) == newer


def test_given_a_spec_a_person_wrote_with_an_unknown_field_when_resolved_then_it_is_refused():
    with pytest.raises(InvalidRunSpec, match="unknown field.*tempalte"):
        resolve_spec({"model_id": "anthropic.claude-3-haiku-20240307-v1:0", "tempalte": "{{ text }}"}, where="a profile")
    with pytest.raises(InvalidRunSpec, match="params.*unknown field.*top_kk"):
        resolve_spec({"model_id": "anthropic.claude-3-haiku-20240307-v1:0", "params": {"top_kk": 5}}, where="a sidecar")
