"""End to end: bad input fails clearly with an email and loses nothing; duplicates; cancel."""
from __future__ import annotations

import json
import uuid

from tests.e2e.conftest import control, finished_run, latest_runs, load_run, mail_about, run_for, sample, wait_until


def drop(aws, key: str, body: bytes) -> str:
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=body)
    return f"s3://quarry-inputs/{key}"


def test_a_header_only_csv_fails_with_an_email_naming_the_file(stack, aws):
    uri = drop(aws, f"incoming/qa/empty-{uuid.uuid4().hex[:6]}.csv", b"question\n")

    run = finished_run(uri)

    assert run.status == "FAILED" and uri in run.error
    mail = mail_about(stack, run.run_id)
    assert "failed" in mail["subject"] and uri in mail["body"]
    assert aws["s3"].head_object(Bucket="quarry-inputs", Key=uri.split("/", 3)[3]), "the input is kept"


def test_a_template_column_missing_from_the_file_fails_fast(stack, aws):
    uri = drop(aws, f"incoming/qa/wrong-{uuid.uuid4().hex[:6]}.csv", b"query\nwhat is two?\n")

    run = finished_run(uri)

    assert run.status == "FAILED" and "question" in run.error
    assert "question" in mail_about(stack, run.run_id)["body"]


def test_an_unknown_profile_fails_with_the_known_profiles_listed(stack, aws):
    uri = drop(aws, f"incoming/no-such-profile/x-{uuid.uuid4().hex[:6]}.csv", b"question\nwhy?\n")

    run = finished_run(uri)

    assert run.status == "FAILED" and "unknown profile 'no-such-profile'" in run.error
    assert "summarize" in mail_about(stack, run.run_id)["body"]


def test_an_invalid_sidecar_spec_fails_naming_the_sidecar(stack, aws):
    key = f"incoming/qa/sidecar-{uuid.uuid4().hex[:6]}.csv"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key + ".spec.json", Body=b'{"model_id": "acme.nothing-v1"}')
    uri = drop(aws, key, b"question\nwhy?\n")

    run = finished_run(uri)

    assert run.status == "FAILED" and ".spec.json" in run.error and "acme.nothing-v1" in run.error


def test_a_request_event_with_the_wrong_schema_fails_with_an_email(stack, aws):
    request_id = f"bad-{uuid.uuid4().hex[:8]}"
    aws["events"].put_events(Entries=[{
        "Source": "acme.crm", "DetailType": "Quarry Batch Requested", "EventBusName": "quarry-bus",
        "Detail": json.dumps({"inputs": "s3://quarry-inputs/x.csv", "request_id": request_id}),
    }])

    run = wait_until(lambda: next((r for r in latest_runs() if r.source_key == f"event:{request_id}" and r.notified_at), None),
                     what="the failed run of the bad request")

    assert run.status == "FAILED" and "wrong schema" in run.error and "input_uri" in run.error
    assert "wrong schema" in mail_about(stack, run.run_id)["body"]


def test_a_small_file_runs_on_demand_and_a_key_with_odd_characters_works(stack, aws):
    uri = drop(aws, f"incoming/summarize/Odd name+ü ({uuid.uuid4().hex[:4]}).jsonl", sample(7))

    run = finished_run(uri)

    assert run.status == "SUCCEEDED" and run.on_demand and run.summary["rows"] == 7
    _, jobs, _ = load_run(run.run_id)
    assert jobs == [], "fewer rows than a job's minimum go to InvokeModel, not to a job"


def test_the_same_object_event_delivered_twice_starts_one_run(stack, aws):
    key = f"incoming/summarize/twice-{uuid.uuid4().hex[:6]}.jsonl"
    uri = drop(aws, key, sample(120))
    head = aws["s3"].head_object(Bucket="quarry-inputs", Key=key)
    event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
             "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {"bucket": {"name": "quarry-inputs"},
                        "object": {"key": key, "size": head["ContentLength"], "eTag": head["ETag"].strip('"')}}}
    queue = aws["sqs"].get_queue_url(QueueName="quarry-preprocess")["QueueUrl"]
    for _ in range(2):  # on top of the event S3 itself sent
        aws["sqs"].send_message(QueueUrl=queue, MessageBody=json.dumps(event))

    run = finished_run(uri)
    wait_until(lambda: all(aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=[name])["Attributes"][name] == "0"
                           for name in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")),
               what="preprocess to have handled every copy of the event")

    assert [r.run_id for r in latest_runs() if r.input_uri == uri] == [run.run_id]


def test_a_cancelled_run_stops_its_jobs_and_keeps_partial_results(stack, aws):
    rows = ["question"] + [f"What is {i} times {i}?" for i in range(40_000)]
    # The qa profile's model: its next job stalls a quarter of the way in until it is stopped, so the
    # run is still running when the cancel comes, however fast this machine answers 40,000 records.
    control(stack, "POST", "/local-bedrock-api/faults",
            {"model_id": "amazon.nova-lite-v1:0", "stall_after_fraction": 0.25, "times": 1})
    uri = drop(aws, f"incoming/qa/big-{uuid.uuid4().hex[:6]}.csv", "\n".join(rows).encode())
    running = wait_until(lambda: (r := run_for(uri)) is not None and r.status == "RUNNING" and r, what="a running run")

    from services.cli.main import main as quarry
    quarry(["cancel", running.run_id])
    run = finished_run(uri, timeout=120)

    assert run.status == "CANCELLED"
    assert "was cancelled" in mail_about(stack, run.run_id)["subject"]
    body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read().decode()
    result_rows = [json.loads(line) for line in body.splitlines()]  # the qa profile writes JSONL
    assert [row["record_id"] for row in result_rows] == [f"{i:010d}" for i in range(40_000)], \
        "every row is in the result once, done or not"
    assert sum(1 for row in result_rows if row["error"]) == run.summary["failed"]
    _, jobs, holders = load_run(run.run_id)
    assert all(job.terminal for job in jobs) and holders == set()
