"""Batch runs that keep promises, end to end on the local stack (fast engine): a deadline met by
finishing a stuck job on demand, a dry run, a budget, duplicates sent once, the response cache, an
output schema, and a Completed job whose records all failed (issue 10's "Done when")."""
from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from tests.e2e.conftest import control, finished_run, load_run, mail_about, sample

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_LITE = "amazon.nova-lite-v1:0"


def drop(aws, key: str, body: bytes, sidecar: dict | None = None) -> str:
    if sidecar is not None:
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key + ".spec.json", Body=json.dumps(sidecar).encode())
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=body)
    return f"s3://quarry-inputs/{key}"


def result_rows(aws, run) -> list[dict]:
    body = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read()
    if run.result_uri.endswith(".parquet"):
        return pq.read_table(io.BytesIO(body)).to_pylist()
    return [json.loads(line) for line in body.splitlines()]


def questions(n: int, *, tag: str) -> bytes:
    return ("question\n" + "".join(f"{tag}: what is {i} plus {i}?\n" for i in range(n))).encode()


def test_a_stuck_job_with_a_deadline_is_stopped_and_its_missing_rows_finish_on_demand_before_the_deadline(stack, aws):
    fault = control(stack, "POST", "/local-bedrock-api/faults",
                    {"model_id": NOVA_LITE, "stall_after_fraction": 0.4, "times": 1})
    try:
        started = dt.datetime.now(dt.timezone.utc)
        uri = drop(aws, f"incoming/qa/deadline-{uuid.uuid4().hex[:6]}.csv", questions(150, tag=uuid.uuid4().hex[:6]),
                   sidecar={"deadline": "3m", "stuck_after_s": 4, "output_format": "jsonl"})
        run = finished_run(uri, timeout=150)
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert run.status == "SUCCEEDED", (run.error, run.summary)
    deadline = run.summary["deadline"]
    assert deadline["met"] and dt.datetime.fromisoformat(deadline["at"]) <= started + dt.timedelta(minutes=3, seconds=5)
    assert deadline["batch_rows"] == 60 and deadline["on_demand_rows"] == 90, deadline
    assert deadline["batch_usd"] is not None and deadline["on_demand_usd"] > 0
    rows = result_rows(aws, run)
    assert [r["record_id"] for r in rows] == [f"{i:010d}" for i in range(150)]
    assert all(r["output"] and not r["error"] for r in rows), "every row answered, some on demand"
    _, jobs, holders = load_run(run.run_id)
    assert len(jobs) == 1 and jobs[0].status == "STOPPED" and "stuck" in jobs[0].cut_short
    assert holders == set()
    mail = mail_about(stack, run.run_id)["body"]
    assert "Deadline:" in mail and "60 rows by batch" in mail and "90 on demand" in mail


def test_a_dry_run_prints_the_estimate_and_creates_no_job(stack, aws, tmp_path, capsys):
    from services.cli.main import main as quarry

    source = tmp_path / "questions.csv"
    source.write_bytes(questions(250, tag="dry"))
    quarry(["submit", str(source), "--profile", "qa", "--dry-run"])

    printed = capsys.readouterr().out
    run_id = printed.split()[0]
    run, jobs, _ = load_run(run_id)
    assert run.status == "SUCCEEDED" and run.summary["dry_run"] and jobs == []
    estimate = run.summary["estimate"]
    assert estimate["rows"] == 250 and estimate["jobs"] == 1 and estimate["job_records"] == 250
    assert estimate["output_tokens_max"] == 250 * 32 and estimate["input_tokens"] > 250
    assert 0 < estimate["batch_usd"] < estimate["on_demand_usd"]
    assert "At batch:" in printed and "On demand:" in printed and "at most 8,000 out" in printed
    listed = boto3.client("bedrock").list_model_invocation_jobs(nameContains=run_id)["invocationJobSummaries"]
    assert listed == [], "no Bedrock job was created"
    assert "a dry run: no job was created" in mail_about(stack, run_id)["body"]


def test_a_run_over_its_budget_is_refused_before_any_job_with_the_estimate_in_the_error_and_email(stack, aws):
    uri = drop(aws, f"incoming/qa/budget-{uuid.uuid4().hex[:6]}.csv", questions(200, tag="budget"),
               sidecar={"budget_usd": 0.0001})

    run = finished_run(uri)

    assert run.status == "FAILED" and "over its budget_usd of $0.0001; no job was created" in run.error
    _, jobs, _ = load_run(run.run_id)
    assert jobs == []
    mail = mail_about(stack, run.run_id)["body"]
    assert "over its budget_usd" in mail and "At batch:" in mail and "As planned:" in mail


def test_a_run_with_half_its_rows_duplicated_sends_each_distinct_request_once(stack, aws):
    tag = uuid.uuid4().hex[:6]
    lines = [f"{tag}: what is {i} plus {i}?" for i in range(100)]
    uri = drop(aws, f"incoming/qa/dups-{tag}.csv", ("question\n" + "\n".join(lines + lines) + "\n").encode())

    run = finished_run(uri)

    assert run.status == "SUCCEEDED", run.error
    _, jobs, _ = load_run(run.run_id)
    assert [job.records for job in jobs] == [100], "one job of the 100 distinct requests"
    assert run.summary["deduplicated_records"] == 100 and run.summary["saved_usd"] > 0
    rows = result_rows(aws, run)
    assert len(rows) == 200 and all(r["output"] and not r["error"] for r in rows)
    assert [r["output"] for r in rows[100:]] == [r["output"] for r in rows[:100]], "answers fanned out"
    assert all(r["input_tokens"] == 0 for r in rows[100:]), "repeats were not billed"


def test_a_rerun_of_the_same_file_with_cache_reuse_creates_no_bedrock_job(stack, aws):
    body, tag = questions(120, tag=uuid.uuid4().hex[:6]), uuid.uuid4().hex[:6]
    first = finished_run(drop(aws, f"incoming/qa/cache-{tag}-1.csv", body, sidecar={"cache": "reuse"}))
    second = finished_run(drop(aws, f"incoming/qa/cache-{tag}-2.csv", body, sidecar={"cache": "reuse"}))

    assert first.status == second.status == "SUCCEEDED"
    _, first_jobs, _ = load_run(first.run_id)
    _, second_jobs, _ = load_run(second.run_id)
    assert len(first_jobs) == 1 and second_jobs == [] and not second.on_demand_records
    assert second.summary["cached_records"] == 120 and second.summary["saved_usd"] > 0
    assert [r["output"] for r in result_rows(aws, second)] == [r["output"] for r in result_rows(aws, first)]


def test_a_schema_run_yields_typed_columns_and_counts_the_invalid_outputs_after_their_retry(stack, aws):
    schema = {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["pos", "neg"]},
                                                "score": {"type": "integer"}, "sure": {"type": "boolean"}},
              "required": ["sentiment", "score"]}
    tag = uuid.uuid4().hex[:6]
    good = [json.dumps({"sentiment": "pos" if i % 2 else "neg", "score": i, "sure": i % 3 == 0}) for i in range(110)]
    bad = [json.dumps({"sentiment": "meh", "score": i}) for i in range(5)] + ["not json at all"] * 5
    texts = good + bad
    body = "".join(json.dumps({"review": f"{tag} {i}\nJSON: {text}"}) + "\n" for i, text in enumerate(texts))
    uri = drop(aws, f"incoming/qa/schema-{tag}.jsonl", body.encode(),
               sidecar={"template": "{{ review }}", "output_schema": schema, "output_format": "parquet",
                        "params": {"max_tokens": 200}})

    run = finished_run(uri, timeout=120)

    assert run.status == "PARTIAL", run.error
    assert run.summary["schema"] == {"valid": 110, "valid_after_retry": 0, "invalid": 10}
    data = aws["s3"].get_object(Bucket="quarry-results", Key=run.result_uri.split("/", 3)[3])["Body"].read()
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.field("score").type == pa.int64() and table.schema.field("sure").type == pa.bool_()
    rows = table.to_pylist()
    assert [r["score"] for r in rows[:110]] == list(range(110)) and rows[3]["sure"] is True
    assert all(r["score"] is None and "does not match the output_schema" in r["error"]
               and "after a retry" in r["error"] for r in rows[110:])
    assert "at sentiment" in rows[110]["error"] and "holds no JSON object" in rows[119]["error"]


def test_a_completed_job_whose_records_all_failed_is_a_failed_job_and_never_a_success(stack, aws):
    fault = control(stack, "POST", "/local-bedrock-api/faults",
                    {"model_id": HAIKU, "record_error_rate": 1.0, "times": 2})
    try:
        uri = drop(aws, f"incoming/summarize/allfail-{uuid.uuid4().hex[:6]}.jsonl", sample(150))
        run = finished_run(uri, timeout=120)
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert run.status == "FAILED" and run.summary["failed"] == 150
    _, jobs, _ = load_run(run.run_id)
    assert [(job.attempt, job.status, job.bedrock_status) for job in sorted(jobs, key=lambda j: j.attempt)] == [
        (0, "FAILED", "Completed"), (1, "FAILED", "Completed")]
    assert "every one of its 150 records failed" in run.error
    assert "failed" in mail_about(stack, run.run_id)["subject"]
