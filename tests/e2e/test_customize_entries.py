"""End to end on the local stack (fast engine): the customize kind's other entry points. A
`Quarry Customization Requested` event, delivered twice, starts one run and one customization job
and is answered once with its request_id; a bad one is answered with the field at fault; `quarry
customize --validate-only` runs the pre-flight and creates no job. Shares the session's stack with
tests/e2e/test_customize.py."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import yaml

from tests.e2e.conftest import latest_runs, mail_about, wait_until
from tests.e2e.test_customize import BASE, TRAIN, _customization_jobs, _put, _rows


@pytest.fixture(scope="module")
def train(stack, aws) -> str:
    return _put(aws["s3"], f"tuning/entries-{uuid.uuid4().hex[:6]}/train.jsonl", _rows()[:TRAIN])


def _trained_only(train_uri: str, name: str) -> dict:
    """A spec that trains and stops there: no hosting, no gate (the quickest whole run)."""
    return {"name": name, "base_model": BASE, "training_data": train_uri, "hyperparameters": {"epochCount": 1},
            "custom_model_name": f"{name}-{uuid.uuid4().hex[:8]}", "hosting": {"type": "none"}, "budget_usd": 50}


def _answers_on_bus(aws) -> str:
    name = f"customize-answers-{uuid.uuid4().hex[:6]}"
    queue = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name, EventBusName="quarry-bus", EventPattern=json.dumps(
        {"source": ["quarry"], "detail-type": ["Quarry Customization Completed", "Quarry Customization Failed"]}))
    aws["events"].put_targets(Rule=name, EventBusName="quarry-bus", Targets=[{"Id": "q", "Arn": arn}])
    return queue


def _answers(aws, queue: str, request_id: str, *, settle_s: float = 0) -> list[dict]:
    """Every answer to `request_id` on the queue, once the first came (and `settle_s` more passed)."""
    found: list[dict] = []

    def drain() -> list[dict]:
        for message in aws["sqs"].receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                                  WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"].get("request_id") == request_id:
                found.append(event)
            aws["sqs"].delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return found

    wait_until(drain, timeout=120, what=f"the answer to request {request_id}")
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        drain()
    return found


def _request(aws, detail: dict) -> None:
    aws["events"].put_events(Entries=[{"Source": "acme.mlops", "DetailType": "Quarry Customization Requested",
                                       "EventBusName": "quarry-bus", "Detail": json.dumps(detail)}])


def test_a_requested_event_delivered_twice_starts_one_job_and_is_answered_once_with_its_request_id(stack, aws, train):
    queue = _answers_on_bus(aws)
    request_id = f"tune-{uuid.uuid4().hex[:8]}"
    detail = {"spec": _trained_only(train, "by-event"), "request_id": request_id}

    _request(aws, detail)
    _request(aws, detail)  # EventBridge delivers at least once: a second copy must change nothing
    answers = _answers(aws, queue, request_id, settle_s=5)

    [answer] = answers
    assert answer["detail-type"] == "Quarry Customization Completed"
    assert answer["detail"]["outcome"] == "SUCCEEDED" and answer["detail"]["summary"]["verdict"] == "trained"
    runs = [r for r in latest_runs() if r.source_key == f"event:{request_id}"]
    assert [r.run_id for r in runs] == [answer["detail"]["run_id"]] and runs[0].origin == "event"
    assert len(_customization_jobs(runs[0].run_id)) == 1, "one customization job, whatever the deliveries"


def test_a_requested_event_with_a_bad_spec_is_answered_failed_naming_the_field(stack, aws, train):
    queue = _answers_on_bus(aws)
    request_id = f"tune-bad-{uuid.uuid4().hex[:8]}"
    spec = _trained_only(train, "bad-event")
    spec.pop("budget_usd")

    _request(aws, {"spec": spec, "request_id": request_id})
    [answer] = _answers(aws, queue, request_id)

    assert answer["detail-type"] == "Quarry Customization Failed"
    assert "budget_usd: required" in answer["detail"]["error"]


def test_quarry_customize_validate_only_reports_the_preflight_and_creates_no_job(stack, train, tmp_path, capsys):
    from services.cli.main import main as quarry

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_trained_only(train, "preflight-only")))
    code = 0
    try:
        quarry(["customize", "--validate-only", str(path)])
    except SystemExit as ended:
        code = ended.code
    captured = capsys.readouterr()
    run_id = captured.out.strip().splitlines()[0]
    run = next(r for r in latest_runs() if r.run_id == run_id)

    assert code in (0, None) and run.status == "SUCCEEDED" and run.summary["verdict"] == "validated"
    assert "Pre-flight: passed" in captured.err and "Cost estimate" in captured.err
    assert _customization_jobs(run_id) == [], "a pre-flight only creates no job"
    assert "pre-flight passed" in mail_about(stack, run_id)["subject"]
