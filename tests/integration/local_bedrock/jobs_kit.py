"""Building batch inputs, creating jobs and reading their outputs, for the contract tests."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterable, Iterator

ROLE = "arn:aws:iam::123456789012:role/QuarryBedrockBatch"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}


def claude_record(index: int, pad: int = 0) -> dict[str, Any]:
    return {
        "recordId": f"rec-{index:06d}",
        "modelInput": {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"Summarise item {index}. {'x' * pad}"}],
        },
    }


def jsonl(records: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(record).encode() + b"\n" for record in records)


def put_input(s3, bucket: str, key: str, body: bytes) -> str:
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def create_job(bedrock, *, input_uri: str, output_bucket: str, model: str = CLAUDE, name: str | None = None,
               **extra: Any) -> str:
    response = bedrock.create_model_invocation_job(
        jobName=name or f"job-{uuid.uuid4().hex[:12]}",
        roleArn=ROLE,
        modelId=model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{output_bucket}/results/"}},
        **extra,
    )
    return response["jobArn"]


def wait_for(bedrock, arn: str, statuses: set[str] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
    """The job once its status is in `statuses`; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {arn} still {job['status']} after {timeout}s (wanted {statuses})")
        time.sleep(0.05)


def job_id(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def read_output(s3, bucket: str, arn: str, input_name: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=f"results/{job_id(arn)}/{input_name}.out")["Body"]
    data = body if isinstance(body, bytes) else body.read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def read_manifest(s3, bucket: str, arn: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"results/{job_id(arn)}/manifest.json.out")["Body"]
    return json.loads(body if isinstance(body, bytes) else body.read())


def events_queue(driver, name: str, detail_type: str) -> Iterator[str]:
    """An SQS queue fed by an EventBridge rule on Bedrock's `detail_type` events, as Quarry's poll
    worker is; its URL while the caller runs, then the rule is removed."""
    sqs, events = driver.client("sqs"), driver.client("events")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventPattern=json.dumps({"source": ["aws.bedrock"], "detail-type": [detail_type]}))
    events.put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    yield url
    events.remove_targets(Rule=name, Ids=["queue"])
    events.delete_rule(Name=name)


def events_until(sqs, url: str, job_arn: str, until: str, *, arn_field: str, status_field: str,
                 timeout: float = 20) -> list[dict[str, Any]]:
    """The job's events on the queue, read until one says `until`; fails the test after `timeout` seconds."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"][arn_field] == job_arn:
                found.append(event)
        if any(event["detail"][status_field] == until for event in found):
            return found
    raise AssertionError(f"no {until} event for {job_arn}; got {[e['detail'][status_field] for e in found]}")
