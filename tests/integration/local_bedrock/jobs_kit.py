"""Building batch inputs, creating jobs and reading their outputs, for the contract tests."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterable

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
