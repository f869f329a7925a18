"""Contract: bad batch input fails the job the way Bedrock fails it, saying what and where."""
from __future__ import annotations

from tests.integration.local_bedrock.jobs_kit import claude_record, create_job, jsonl, put_input, wait_for


def failed_with(bedrock, arn: str) -> str:
    job = wait_for(bedrock, arn)
    assert job["status"] == "Failed", job
    assert "totalRecordCount" not in job or job["processedRecordCount"] == 0
    return job["message"]


def test_a_malformed_jsonl_line_fails_the_job_naming_file_and_line(bedrock, s3, buckets):
    given_in, given_out = buckets
    body = jsonl(claude_record(i) for i in range(2)) + b'{"recordId": "broken", "modelInput": {\n' + jsonl(
        claude_record(i) for i in range(2, 120))
    uri = put_input(s3, given_in, "bad/input.jsonl", body)

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert "Line 3 of s3://" in message and "bad/input.jsonl" in message and "not valid JSON" in message


def test_a_record_without_model_input_fails_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [claude_record(i) for i in range(120)]
    records[10] = {"recordId": "no-input", "prompt": "hello"}
    uri = put_input(s3, given_in, "bad/input.jsonl", jsonl(records))

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert "Line 11" in message and "no modelInput" in message


def test_a_model_input_that_names_the_model_fails_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    records = [claude_record(i) for i in range(120)]
    records[0]["modelInput"]["modelId"] = "anthropic.claude-3-haiku-20240307-v1:0"
    uri = put_input(s3, given_in, "bad/input.jsonl", jsonl(records))

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert "Line 1" in message and "modelId" in message


def test_an_input_prefix_with_no_files_fails_the_job(bedrock, buckets):
    given_in, given_out = buckets

    message = failed_with(bedrock, create_job(bedrock, input_uri=f"s3://{given_in}/empty/", output_bucket=given_out))

    assert f"No JSONL input files were found at s3://{given_in}/empty/" in message


def test_a_missing_input_bucket_fails_the_job(bedrock, buckets):
    _, given_out = buckets

    message = failed_with(bedrock, create_job(bedrock, input_uri="s3://no-such-quarry-bucket/in/", output_bucket=given_out))

    assert "no-such-quarry-bucket does not exist" in message


def test_a_missing_output_bucket_fails_the_job(bedrock, s3, buckets):
    given_in, _ = buckets
    uri = put_input(s3, given_in, "ok/input.jsonl", jsonl(claude_record(i) for i in range(120)))

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket="no-such-output-bucket"))

    assert "output S3 bucket no-such-output-bucket does not exist" in message


# --- quotas (the test server runs with small limits: see conftest.TEST_LIMITS) --------------------
def test_fewer_records_than_the_minimum_fail_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "q/input.jsonl", jsonl(claude_record(i) for i in range(99)))

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert "99 records, fewer than the minimum of 100" in message


def test_more_records_than_the_maximum_fail_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    put_input(s3, given_in, "q/a.jsonl", jsonl(claude_record(i) for i in range(300)))
    put_input(s3, given_in, "q/b.jsonl", jsonl(claude_record(i) for i in range(300, 501)))

    message = failed_with(bedrock, create_job(bedrock, input_uri=f"s3://{given_in}/q/", output_bucket=given_out))

    assert "501 records, more than the maximum of 500" in message


def test_more_records_in_one_file_than_allowed_fail_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    uri = put_input(s3, given_in, "q/input.jsonl", jsonl(claude_record(i) for i in range(401)))

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert "has 401 records, over the limit of 400 records per file" in message


def test_a_file_over_the_size_limit_fails_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    body = jsonl(claude_record(i, pad=1000) for i in range(150))
    assert len(body) > 120_000
    uri = put_input(s3, given_in, "q/big.jsonl", body)

    message = failed_with(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert f"is {len(body)} bytes, over the limit of 120000 bytes per file" in message


def test_a_job_over_the_size_limit_fails_the_job(bedrock, s3, buckets):
    given_in, given_out = buckets
    for part in range(3):
        body = jsonl(claude_record(part * 100 + i, pad=600) for i in range(100))
        assert len(body) < 120_000
        put_input(s3, given_in, f"q/part-{part}.jsonl", body)

    message = failed_with(bedrock, create_job(bedrock, input_uri=f"s3://{given_in}/q/", output_bucket=given_out))

    assert "over the limit of 200000 bytes per job" in message


def test_the_service_keeps_serving_after_bad_jobs(bedrock, s3, buckets):
    given_in, given_out = buckets
    put_input(s3, given_in, "x/bad.jsonl", b"\xff\xfe not json at all\n")
    failed_with(bedrock, create_job(bedrock, input_uri=f"s3://{given_in}/x/bad.jsonl", output_bucket=given_out))
    uri = put_input(s3, given_in, "y/good.jsonl", jsonl(claude_record(i) for i in range(100)))

    job = wait_for(bedrock, create_job(bedrock, input_uri=uri, output_bucket=given_out))

    assert job["status"] == "Completed"
