"""End to end on the local stack (fast engine): a file or an event in, every row out, an email."""
from __future__ import annotations

import csv
import io
import json
import uuid

import pyarrow.parquet as pq

from tests.e2e.conftest import control, finished_run, load_run, mail_about, sample


def test_a_file_dropped_into_s3_runs_to_an_email_with_every_row_once(stack, aws):
    key = f"incoming/summarize/dialogs-{uuid.uuid4().hex[:6]}.jsonl"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=sample(250))

    run = finished_run(f"s3://quarry-inputs/{key}")

    assert run.status == "SUCCEEDED"
    mail = mail_about(stack, run.run_id)
    assert "succeeded" in mail["subject"] and "250 (250 succeeded, 0 failed)" in mail["body"]
    assert run.result_uri in mail["body"]
    body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    inputs = [json.loads(line) for line in sample(250).splitlines()]
    assert [row["record_id"] for row in rows] == [f"{i:010d}" for i in range(250)]
    assert [row["prompt"] for row in rows] == [item["prompt"] for item in inputs]
    assert all(row["output"] and not row["error"] for row in rows)
    _, jobs, holders = load_run(run.run_id)
    assert jobs and all(job.status == "COMPLETED" for job in jobs)
    assert holders == set(), "every semaphore slot is released"


def test_a_batch_requested_event_starts_a_run(stack, aws):
    key = f"requests/{uuid.uuid4().hex[:6]}/questions.csv"
    rows = ["question"] + [f"What is {i} plus {i}?" for i in range(120)]
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body="\n".join(rows).encode())

    aws["events"].put_events(Entries=[{
        "Source": "acme.crm", "DetailType": "Quarry Batch Requested", "EventBusName": "quarry-bus",
        "Detail": json.dumps({"input_uri": f"s3://quarry-inputs/{key}", "profile": "qa",
                              "spec": {"output_format": "parquet", "name": "crm-questions"}}),
    }])
    run = finished_run(f"s3://quarry-inputs/{key}")

    assert run.status == "SUCCEEDED" and run.origin == "event" and run.spec.name == "crm-questions"
    assert "crm-questions" in mail_about(stack, run.run_id)["subject"]
    data = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read()
    table = pq.read_table(io.BytesIO(data))
    assert table.num_rows == 120 and table.column("question").to_pylist() == rows[1:]
    _, _, holders = load_run(run.run_id)
    assert holders == set()


def test_failed_records_are_retried_once_and_every_row_succeeds(stack, aws):
    key = f"incoming/summarize/flaky-{uuid.uuid4().hex[:6]}.jsonl"
    fault = control(stack, "POST", "/local-bedrock-api/faults", {
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0", "record_error_rate": 0.2, "times": 1})
    try:
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=sample(200))
        run = finished_run(f"s3://quarry-inputs/{key}")
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert run.status == "SUCCEEDED", run.summary
    assert run.summary["rows"] == 200 and run.summary["failed"] == 0
    assert 0 < run.summary["on_demand_records"] < 100, "a few failed records are retried on demand, not as a job"


def test_a_partially_completed_job_is_salvaged_and_its_missing_records_rerun_as_a_job(stack, aws):
    key = f"incoming/summarize/partial-{uuid.uuid4().hex[:6]}.jsonl"
    fault = control(stack, "POST", "/local-bedrock-api/faults", {
        "model_id": "anthropic.claude-3-haiku-20240307-v1:0", "outcome": "PartiallyCompleted",
        "after_fraction": 0.4, "times": 1})
    try:
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=sample(300))
        run = finished_run(f"s3://quarry-inputs/{key}")
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    _, jobs, holders = load_run(run.run_id)
    assert run.status == "SUCCEEDED" and run.summary["rows"] == 300 and run.summary["failed"] == 0
    assert sorted((job.attempt, job.status, job.records) for job in jobs) == [(0, "PARTIAL", 300), (1, "COMPLETED", 180)]
    assert holders == set()
