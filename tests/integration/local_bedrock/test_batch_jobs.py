"""Contract: model invocation jobs behave as Bedrock's do, through boto3 and aiobotocore alike."""
from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError

from tests.integration.local_bedrock.jobs_kit import (
    CLAUDE, ROLE, TITAN_EMBED, claude_record, create_job, job_id, jsonl, put_input, read_manifest,
    read_output, wait_for,
)


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_a_job_completes_and_every_record_appears_once_in_the_output(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [claude_record(i) for i in range(150)]
    uri = put_input(s3, given_in, "batch/part-1.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed"
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (150, 150, 150, 0)
    lines = read_output(s3, given_out, arn, "part-1.jsonl")
    assert sorted(line["recordId"] for line in lines) == [r["recordId"] for r in records]
    by_id = {r["recordId"]: r for r in records}
    for line in lines:
        assert line["modelInput"] == by_id[line["recordId"]]["modelInput"]
        assert line["modelOutput"]["content"][0]["type"] == "text"
        assert line["modelOutput"]["usage"]["input_tokens"] > 0
    assert [line["recordId"] for line in lines] != [r["recordId"] for r in records], "output must not keep input order"


def test_the_manifest_counts_records_and_tokens(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "batch/a.jsonl", jsonl(claude_record(i) for i in range(120)))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)
    wait_for(bedrock, arn)

    manifest = read_manifest(s3, given_out, arn)
    lines = read_output(s3, given_out, arn, "a.jsonl")
    assert manifest["totalRecordCount"] == manifest["processedRecordCount"] == manifest["successRecordCount"] == 120
    assert manifest["errorRecordCount"] == 0
    assert manifest["inputTokenCount"] == sum(line["modelOutput"]["usage"]["input_tokens"] for line in lines)
    assert manifest["outputTokenCount"] == sum(line["modelOutput"]["usage"]["output_tokens"] for line in lines)


def test_a_prefix_input_reads_every_jsonl_file_under_it(bedrock, s3, buckets):
    given_in, given_out = buckets
    put_input(s3, given_in, "run/one.jsonl", jsonl(claude_record(i) for i in range(60)))
    put_input(s3, given_in, "run/two.jsonl", jsonl(claude_record(i) for i in range(60, 110)))
    put_input(s3, given_in, "run/readme.txt", b"not an input")

    arn = create_job(bedrock, input_uri=f"s3://{given_in}/run/", output_bucket=given_out)
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed" and job["totalRecordCount"] == 110
    assert len(read_output(s3, given_out, arn, "one.jsonl")) == 60
    assert len(read_output(s3, given_out, arn, "two.jsonl")) == 50


def test_records_without_a_record_id_get_one(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [{"modelInput": claude_record(i)["modelInput"]} for i in range(100)]
    uri = put_input(s3, given_in, "b/x.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)
    wait_for(bedrock, arn)

    ids = [line["recordId"] for line in read_output(s3, given_out, arn, "x.jsonl")]
    assert len(set(ids)) == 100 and all(ids)


def test_a_body_of_the_wrong_family_fails_its_record_not_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [claude_record(i) for i in range(100)]
    records[7] = {"recordId": "bad-body", "modelInput": {"inputText": "titan body sent to claude"}}
    uri = put_input(s3, given_in, "b/x.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed" and job["errorRecordCount"] == 1 and job["successRecordCount"] == 99
    [bad] = [line for line in read_output(s3, given_out, arn, "x.jsonl") if line["recordId"] == "bad-body"]
    assert "modelOutput" not in bad
    assert bad["error"]["errorCode"] == 400
    assert "required key [messages] not found" in bad["error"]["errorMessage"]


def test_converse_jobs_take_converse_bodies_and_answer_in_converse_shape(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [{"recordId": f"c{i}", "modelInput": {"messages": [{"role": "user", "content": [{"text": f"hello {i}"}]}],
                                                   "inferenceConfig": {"maxTokens": 32}}} for i in range(100)]
    uri = put_input(s3, given_in, "c/x.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out, model="amazon.nova-lite-v1:0",
                     modelInvocationType="Converse")
    job = wait_for(bedrock, arn)

    assert job["status"] == "Completed" and job["modelInvocationType"] == "Converse"
    line = read_output(s3, given_out, arn, "x.jsonl")[0]
    assert set(line["modelOutput"]) == {"output", "stopReason", "usage", "metrics"}
    assert line["modelOutput"]["usage"]["totalTokens"] == line["modelOutput"]["usage"]["inputTokens"] + line["modelOutput"]["usage"]["outputTokens"]


def test_embedding_jobs_return_vectors_of_the_asked_size(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [{"recordId": f"e{i}", "modelInput": {"inputText": f"sentence number {i}", "dimensions": 256}} for i in range(100)]
    uri = put_input(s3, given_in, "e/x.jsonl", jsonl(records))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out, model=TITAN_EMBED)
    wait_for(bedrock, arn)

    for line in read_output(s3, given_out, arn, "x.jsonl"):
        assert len(line["modelOutput"]["embedding"]) == 256
        assert line["modelOutput"]["inputTextTokenCount"] > 0


# --- idempotency -------------------------------------------------------------------------------
def test_the_same_client_request_token_returns_the_same_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "i/x.jsonl", jsonl(claude_record(i) for i in range(100)))

    first = create_job(bedrock, input_uri=uri, output_bucket=given_out, name="idem-job", clientRequestToken="run-42-chunk-7")
    second = create_job(bedrock, input_uri=uri, output_bucket=given_out, name="idem-job", clientRequestToken="run-42-chunk-7")

    assert first == second
    listed = bedrock.list_model_invocation_jobs(nameContains="idem-job")["invocationJobSummaries"]
    assert [summary["jobArn"] for summary in listed] == [first]
    assert bedrock.get_model_invocation_job(jobIdentifier=first)["clientRequestToken"] == "run-42-chunk-7"


def test_a_second_job_with_a_used_name_is_a_conflict(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "i/x.jsonl", jsonl(claude_record(i) for i in range(100)))
    create_job(bedrock, input_uri=uri, output_bucket=given_out, name="same-name")

    with pytest.raises(ClientError) as exc:
        create_job(bedrock, input_uri=uri, output_bucket=given_out, name="same-name")
    assert error_code(exc) == "ConflictException"


# --- get, list, stop -----------------------------------------------------------------------------
def test_a_job_is_found_by_id_and_by_arn(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "g/x.jsonl", jsonl(claude_record(i) for i in range(100)))
    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)

    by_arn = bedrock.get_model_invocation_job(jobIdentifier=arn)
    by_id = bedrock.get_model_invocation_job(jobIdentifier=job_id(arn))

    assert by_arn["jobArn"] == by_id["jobArn"] == arn
    assert by_arn["roleArn"] == ROLE and by_arn["modelId"] == CLAUDE
    assert by_arn["timeoutDurationInHours"] == 24
    assert by_arn["jobExpirationTime"] - by_arn["submitTime"] == dt.timedelta(hours=24)


def test_an_unknown_job_is_not_found(bedrock):
    with pytest.raises(ClientError) as exc:
        bedrock.get_model_invocation_job(jobIdentifier="abcdefghij12")
    assert error_code(exc) == "ResourceNotFoundException"


def test_list_filters_by_status_name_and_time_and_pages(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "l/x.jsonl", jsonl(claude_record(i) for i in range(100)))
    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    arns = [create_job(bedrock, input_uri=uri, output_bucket=given_out, name=f"listing-{i}") for i in range(5)]
    bad = create_job(bedrock, input_uri=f"s3://{given_in}/nothing-here/", output_bucket=given_out, name="other-1")
    for arn in arns + [bad]:
        wait_for(bedrock, arn)

    named = bedrock.list_model_invocation_jobs(nameContains="listing")["invocationJobSummaries"]
    failed = bedrock.list_model_invocation_jobs(statusEquals="Failed")["invocationJobSummaries"]
    later = bedrock.list_model_invocation_jobs(submitTimeAfter=started)["invocationJobSummaries"]
    earlier = bedrock.list_model_invocation_jobs(submitTimeBefore=started)["invocationJobSummaries"]
    ascending = bedrock.list_model_invocation_jobs(nameContains="listing", sortOrder="Ascending")["invocationJobSummaries"]

    assert sorted(s["jobArn"] for s in named) == sorted(arns)
    assert [s["jobArn"] for s in failed] == [bad]
    assert len(later) == 6 and earlier == []
    assert [s["jobArn"] for s in ascending] == arns
    pages, token = [], None
    while True:
        page = bedrock.list_model_invocation_jobs(maxResults=2, **({"nextToken": token} if token else {}))
        pages.append([s["jobArn"] for s in page["invocationJobSummaries"]])
        token = page.get("nextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 2]
    assert sorted(sum(pages, [])) == sorted(arns + [bad])


def test_stopping_a_finished_job_is_a_conflict(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "s/x.jsonl", jsonl(claude_record(i) for i in range(100)))
    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out)
    wait_for(bedrock, arn)

    with pytest.raises(ClientError) as exc:
        bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert error_code(exc) == "ConflictException"


# --- request validation --------------------------------------------------------------------------
@pytest.mark.parametrize("override, where", [
    ({"jobName": "has spaces"}, "jobName"),
    ({"jobName": "x" * 64}, "jobName"),
    ({"timeoutDurationInHours": 23}, "timeoutDurationInHours"),
    ({"timeoutDurationInHours": 169}, "timeoutDurationInHours"),
    ({"roleArn": "not-a-role"}, "roleArn"),
    ({"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "https://bucket/key"}}}, "inputDataConfig.s3InputDataConfig.s3Uri"),
    ({"outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://Bad_Bucket/x"}}}, "outputDataConfig.s3OutputDataConfig.s3Uri"),
    ({"modelInvocationType": "Chat"}, "modelInvocationType"),
])
def test_create_rejects_what_bedrock_rejects(bedrock, override, where):
    request = {
        "jobName": "valid-name",
        "roleArn": ROLE,
        "modelId": CLAUDE,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://some-bucket/in/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://some-bucket/out/"}},
        **override,
    }
    with pytest.raises(ClientError) as exc:
        bedrock.create_model_invocation_job(**request)
    assert error_code(exc) == "ValidationException"
    assert f"at '{where}' failed to satisfy constraint" in exc.value.response["Error"]["Message"]


def test_create_rejects_an_unknown_model(bedrock):
    with pytest.raises(ClientError) as exc:
        bedrock.create_model_invocation_job(
            jobName="valid-name", roleArn=ROLE, modelId="acme.unknown-model-v1",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://some-bucket/in/"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://some-bucket/out/"}},
        )
    assert error_code(exc) == "ValidationException"
    assert "acme.unknown-model-v1" in exc.value.response["Error"]["Message"]


def test_an_inference_profile_id_resolves_to_its_model(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "p/x.jsonl", jsonl(claude_record(i) for i in range(100)))

    arn = create_job(bedrock, input_uri=uri, output_bucket=given_out, model=f"us.{CLAUDE}")

    job = wait_for(bedrock, arn)
    assert job["status"] == "Completed" and job["modelId"] == f"us.{CLAUDE}"
