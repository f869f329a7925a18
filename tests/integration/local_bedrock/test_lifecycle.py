"""Contract: the job lifecycle, its events on EventBridge, progress, stops, quotas and timeouts."""
from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from tests.integration.local_bedrock.conftest import TEST_LIMITS
from tests.integration.local_bedrock.jobs_kit import (
    CLAUDE, claude_record, create_job, events_queue, events_until, jsonl, put_input, read_manifest, read_output,
    wait_for,
)
from infra.processes import start_local_bedrock


# --- events ---------------------------------------------------------------------------------------
@pytest.fixture
def job_events_queue(driver) -> str:
    """An SQS queue fed by an EventBridge rule on Bedrock's batch job events."""
    yield from events_queue(driver, f"bedrock-events-{uuid.uuid4().hex[:8]}", "Batch Inference Job State Change")


def received_events(sqs, url: str, job_arn: str, until: str, timeout: float = 20) -> list[dict]:
    return events_until(sqs, url, job_arn, until, arn_field="batchJobArn", status_field="status", timeout=timeout)


def test_every_status_change_reaches_an_sqs_queue_through_a_rule(bedrock, driver, s3, buckets, job_events_queue):
    uri = put_input(s3, buckets[0], "ev/input.jsonl", jsonl(claude_record(i) for i in range(100)))

    arn = create_job(bedrock, input_uri=uri, output_bucket=buckets[1], name="evented-job")
    events = received_events(driver.client("sqs"), job_events_queue, arn, until="Completed")

    assert [e["detail"]["status"] for e in events] == ["Submitted", "Validating", "Scheduled", "InProgress", "Completed"]
    first = events[0]
    assert first["source"] == "aws.bedrock" and first["detail-type"] == "Batch Inference Job State Change"
    assert first["resources"] == [arn]
    assert set(first["detail"]) == {"version", "accountId", "batchJobName", "batchJobArn", "batchModelId", "status",
                                    "failureMessage", "creationTime"}
    assert first["detail"]["batchJobName"] == "evented-job" and first["detail"]["batchModelId"] == CLAUDE


def test_a_failed_job_event_carries_its_failure_message(bedrock, driver, buckets, job_events_queue):
    arn = create_job(bedrock, input_uri=f"s3://{buckets[0]}/nothing/", output_bucket=buckets[1])

    events = received_events(driver.client("sqs"), job_events_queue, arn, until="Failed")

    assert "No JSONL input files" in events[-1]["detail"]["failureMessage"]


# --- a paced service: records take time, hours are short --------------------------------------------
def start_paced(moto, logs_dir, seconds_per_hour: float, **env: str):
    """A service taking 10 ms a record, in batches of 5, whose 'hour' lasts `seconds_per_hour`."""
    return start_local_bedrock(logs_dir, aws_endpoint=moto.url, env={
        **TEST_LIMITS,
        "LOCAL_BEDROCK_DELAY_PER_RECORD": "0.01",
        "LOCAL_BEDROCK_BATCH_SIZE": "5",
        "LOCAL_BEDROCK_DELAY_SECONDS_PER_HOUR": str(seconds_per_hour),
        **env,
    })


@pytest.fixture(scope="module")
def paced_server(moto, logs_dir):
    """One job at a time, 10 ms a record, and an 'hour' of 50 ms (so 24 h is 1.2 s)."""
    server = start_paced(moto, logs_dir, 0.05, LOCAL_BEDROCK_RUNNING_JOBS="1")
    yield server
    server.stop()


@pytest.fixture
def paced(driver, paced_server):
    return driver.client("bedrock", paced_server.url)


def test_record_counts_advance_while_in_progress(paced, s3, buckets):
    # 300 records run for 3 s (its 168 h are 8.4 s): on loaded cores the looks came about 0.3 s apart,
    # so 150 records (1.5 s) left room for about five of them.
    uri = put_input(s3, buckets[0], "p/input.jsonl", jsonl(claude_record(i) for i in range(300)))
    arn = create_job(paced, input_uri=uri, output_bucket=buckets[1], timeoutDurationInHours=168)

    seen = set()
    while (job := paced.get_model_invocation_job(jobIdentifier=arn))["status"] not in ("Completed", "Failed"):
        if job["status"] == "InProgress":
            seen.add(job["processedRecordCount"])
        time.sleep(0.05)

    assert job["status"] == "Completed"
    assert len([count for count in seen if 0 < count < 300]) >= 3, seen


def test_a_stopped_job_goes_through_stopping_and_keeps_what_it_processed(paced, driver, s3, buckets, job_events_queue):
    # 400 records (the most a test file holds) run for 4 s, so the stop lands mid-job even on a loaded
    # machine (150 records gave it 1.5 s, and a CI run saw the job complete first); its 168 h are 8.4 s.
    uri = put_input(s3, buckets[0], "p/input.jsonl", jsonl(claude_record(i) for i in range(400)))
    arn = create_job(paced, input_uri=uri, output_bucket=buckets[1], timeoutDurationInHours=168)
    while not (job := wait_for(paced, arn, {"InProgress"}))["processedRecordCount"]:
        time.sleep(0.02)

    paced.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_for(paced, arn)
    events = received_events(driver.client("sqs"), job_events_queue, arn, until="Stopped")

    assert [e["detail"]["status"] for e in events][-3:] == ["InProgress", "Stopping", "Stopped"]
    assert job["status"] == "Stopped" and 0 < job["processedRecordCount"] < 400
    assert len(read_output(s3, buckets[1], arn, "input.jsonl")) == job["processedRecordCount"]
    assert read_manifest(s3, buckets[1], arn)["processedRecordCount"] == job["processedRecordCount"]


@pytest.fixture(scope="module")
def long_hour_server(moto, logs_dir):
    """10 ms a record and an 'hour' of 150 ms: 24 h is 3.6 s, less than 400 records take (4 s)."""
    server = start_paced(moto, logs_dir, 0.15)
    yield server
    server.stop()


def test_a_job_past_its_timeout_is_partially_completed(driver, long_hour_server, s3, buckets):
    # The job cannot finish its 4 s of records within its 3.6 s and has 3.4 s to start them. With the
    # paced service's 1.2 s, a loaded machine had processed 15 records at the timeout (90 on idle
    # cores); none would have failed the test.
    bedrock = driver.client("bedrock", long_hour_server.url)
    uri = put_input(s3, buckets[0], "p/input.jsonl", jsonl(claude_record(i) for i in range(400)))

    arn = create_job(bedrock, input_uri=uri, output_bucket=buckets[1], timeoutDurationInHours=24)
    job = wait_for(bedrock, arn)

    assert job["status"] == "PartiallyCompleted"
    assert 0 < job["processedRecordCount"] < job["totalRecordCount"] == 400
    assert "timeout" in job["message"]


def test_a_job_never_started_before_its_timeout_expires(paced, s3, buckets):
    # The busy job needs 4 s (400 records at 10 ms) and holds the only slot; the waiting job's
    # 24 h are 1.2 s.
    uri = put_input(s3, buckets[0], "p/input.jsonl", jsonl(claude_record(i) for i in range(400)))
    busy = create_job(paced, input_uri=uri, output_bucket=buckets[1], timeoutDurationInHours=168)
    wait_for(paced, busy, {"InProgress"})

    waiting = create_job(paced, input_uri=uri, output_bucket=buckets[1], timeoutDurationInHours=24)
    job = wait_for(paced, waiting)

    assert job["status"] == "Expired" and job["processedRecordCount"] == 0
    assert wait_for(paced, busy)["status"] == "Completed"


# --- a slow service: jobs stay Submitted, so quotas can be filled ----------------------------------------
@pytest.fixture(scope="module")
def slow_server(moto, logs_dir):
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env={
        **TEST_LIMITS,
        "LOCAL_BEDROCK_DELAY_SUBMITTED": "60",
        "LOCAL_BEDROCK_MAX_ACTIVE_JOBS_PER_MODEL": "2",
    })
    yield server
    server.stop()


@pytest.fixture
def slow(driver, slow_server):
    client = driver.client("bedrock", slow_server.url)
    for summary in client.list_model_invocation_jobs()["invocationJobSummaries"]:
        if summary["status"] == "Submitted":
            client.stop_model_invocation_job(jobIdentifier=summary["jobArn"])
    return client


def test_a_job_stopped_before_it_starts_is_stopped(slow, buckets):
    arn = create_job(slow, input_uri=f"s3://{buckets[0]}/x/", output_bucket=buckets[1])

    slow.stop_model_invocation_job(jobIdentifier=arn)

    job = wait_for(slow, arn)
    assert job["status"] == "Stopped" and job["endTime"] >= job["submitTime"]


def test_jobs_beyond_the_per_model_limit_exceed_the_quota(slow, buckets):
    first = [create_job(slow, input_uri=f"s3://{buckets[0]}/x/", output_bucket=buckets[1]) for _ in range(2)]

    with pytest.raises(ClientError) as exc:
        create_job(slow, input_uri=f"s3://{buckets[0]}/x/", output_bucket=buckets[1])
    other_model = create_job(slow, input_uri=f"s3://{buckets[0]}/x/", output_bucket=buckets[1], model="amazon.nova-micro-v1:0")
    slow.stop_model_invocation_job(jobIdentifier=first[0])
    wait_for(slow, first[0])
    after_a_slot_frees = create_job(slow, input_uri=f"s3://{buckets[0]}/x/", output_bucket=buckets[1])

    assert exc.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    assert "limit of 2 submitted and in-progress" in exc.value.response["Error"]["Message"]
    for arn in (other_model, after_a_slot_frees):
        assert slow.get_model_invocation_job(jobIdentifier=arn)["status"] == "Submitted"
