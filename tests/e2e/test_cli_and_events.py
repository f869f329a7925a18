"""End to end: the CLI's submit/results, Quarry's completion events, and backing off throttles."""
from __future__ import annotations

import json
import uuid

import pyarrow.parquet as pq

from services.cli.main import main as quarry
from tests.e2e.conftest import control, finished_run, latest_runs, mail_about, wait_until


def test_quarry_submit_runs_a_local_file_and_results_downloads_it(stack, aws, tmp_path, capsys):
    source = tmp_path / "notes.csv"
    source.write_text("id,text\n" + "".join(f'{i},"note {i}, with a comma"\n' for i in range(150)))

    quarry(["submit", str(source), "--model", "amazon.titan-text-express-v1", "--template", "Summarise: {{ text }}",
            "--max-tokens", "40", "--format", "parquet", "--name", "cli-notes"])
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    run = wait_until(lambda: next((r for r in latest_runs() if r.run_id == run_id and r.terminal and r.notified_at), None),
                     what="the submitted run to finish")
    quarry(["results", run_id, "--out", str(tmp_path / "out.parquet")])

    table = pq.read_table(tmp_path / "out.parquet")
    assert run.status == "SUCCEEDED" and run.origin == "cli" and run.spec.name == "cli-notes"
    assert table.column("text").to_pylist() == [f"note {i}, with a comma" for i in range(150)]
    assert all("note" in output for output in table.column("output").to_pylist())


def test_a_finished_run_is_announced_on_quarrys_bus(stack, aws):
    name = f"run-events-{uuid.uuid4().hex[:6]}"
    queue = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name, EventBusName="quarry-bus", EventPattern=json.dumps(
        {"source": ["quarry"], "detail-type": ["Quarry Run Completed", "Quarry Run Failed"]}))
    aws["events"].put_targets(Rule=name, EventBusName="quarry-bus", Targets=[{"Id": "q", "Arn": arn}])
    key = f"incoming/qa/announce-{uuid.uuid4().hex[:6]}.csv"
    aws["s3"].put_object(Bucket="quarry-inputs", Key=key, Body=b"question\nWho wrote Hamlet?\n")

    run = finished_run(f"s3://quarry-inputs/{key}")
    events = wait_until(lambda: aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages"),
                        what="a run event on the bus")

    event = json.loads(events[0]["Body"])
    assert event["detail-type"] == "Quarry Run Completed"
    assert event["detail"]["run_id"] == run.run_id and event["detail"]["result_uri"] == run.result_uri


def test_throttled_job_creates_back_off_and_the_run_still_succeeds(stack, aws):
    fault = control(stack, "POST", "/local-bedrock-api/faults",
                    {"model_id": "amazon.nova-lite-v1:0", "throttle_creates": 2})
    key = f"incoming/qa/throttled-{uuid.uuid4().hex[:6]}.csv"
    try:
        aws["s3"].put_object(Bucket="quarry-inputs", Key=key,
                             Body=("question\n" + "".join(f"What is {i}?\n" for i in range(120))).encode())
        run = finished_run(f"s3://quarry-inputs/{key}", timeout=120)
    finally:
        control(stack, "DELETE", f"/local-bedrock-api/faults/{fault['fault_id']}")

    assert run.status == "SUCCEEDED" and run.summary["rows"] == 120
    assert "succeeded" in mail_about(stack, run.run_id)["subject"]


def test_quarry_status_warns_about_messages_parked_in_a_dead_letter_queue(stack, aws, capsys):
    queue = aws["sqs"].get_queue_url(QueueName="quarry-notify")["QueueUrl"]
    aws["sqs"].send_message(QueueUrl=queue, MessageBody='{"type": "NotAMessage"}')
    dlq = aws["sqs"].get_queue_url(QueueName="quarry-notify-dlq")["QueueUrl"]
    wait_until(lambda: int(aws["sqs"].get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
                           ["Attributes"]["ApproximateNumberOfMessages"]), what="the bad message to be parked")

    quarry(["status"])

    assert "parked in quarry-notify-dlq" in capsys.readouterr().err.replace("\n", "")
    aws["sqs"].purge_queue(QueueUrl=dlq)
