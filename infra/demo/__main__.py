"""`make demo`: a real batch inference job, end to end, on this machine alone.

Starts a moto server and the local Bedrock with the real engine (SmolLM2-135M-Instruct behind the
Claude model id), uploads the DialogSum sample shipped beside this file as a Bedrock batch input,
runs a model invocation job through boto3 exactly as on AWS, follows its progress, and prints the
job's EventBridge events, its manifest and the first summaries next to the human ones.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from infra.processes import Server, start_local_bedrock, start_moto

SAMPLE = Path(__file__).with_name("dialogsum_sample.jsonl")
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE = "arn:aws:iam::123456789012:role/QuarryBedrockBatch"
TERMINAL = {"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"}
console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="conversations to summarise (100..300)")
    parser.add_argument("--engine", choices=["real", "fast"], default="real")
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args()
    if not 100 <= args.rows <= 300:
        parser.error("--rows must be between 100 (Bedrock's minimum per job) and 300 (the shipped sample)")
    logs = Path(tempfile.mkdtemp(prefix="quarry-demo-"))
    console.print(f"[bold]Quarry demo[/]: starting moto and the local Bedrock ({args.engine} engine); logs in {logs}")
    moto = start_moto(logs)
    bedrock = None
    try:
        bedrock = start_local_bedrock(logs, aws_endpoint=moto.url, args=("--engine", args.engine, "--preload"),
                                      timeout=300)
        _run(moto, bedrock, args)
    finally:
        for server in (bedrock, moto):
            if server is not None:
                server.stop()


def _clients(moto: Server, bedrock: Server) -> dict:
    os.environ.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=moto.url, AWS_ENDPOINT_URL_BEDROCK=bedrock.url,
                      AWS_ENDPOINT_URL_BEDROCK_RUNTIME=bedrock.url)
    config = Config(retries={"mode": "standard"})
    # Only the endpoint variables above differ from AWS: this is the code that would run there.
    return {name: boto3.client(name, config=config) for name in ("s3", "sqs", "events", "bedrock")}


def _run(moto: Server, bedrock: Server, args: argparse.Namespace) -> None:
    aws = _clients(moto, bedrock)
    suffix = uuid.uuid4().hex[:8]
    inputs, outputs = f"quarry-demo-in-{suffix}", f"quarry-demo-out-{suffix}"
    for bucket in (inputs, outputs):
        aws["s3"].create_bucket(Bucket=bucket)
    queue_url = _event_queue(aws, suffix)

    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[: args.rows]]
    records = [{"recordId": f"dialog-{i:04d}", "modelInput": _claude_body(row["prompt"], args.max_tokens)}
               for i, row in enumerate(rows)]
    body = "".join(json.dumps(record) + "\n" for record in records).encode()
    aws["s3"].put_object(Bucket=inputs, Key="batch/dialogsum.jsonl", Body=body)
    console.print(f"Uploaded {len(records)} conversations to s3://{inputs}/batch/dialogsum.jsonl")

    arn = aws["bedrock"].create_model_invocation_job(
        jobName=f"quarry-demo-{suffix}", roleArn=ROLE, modelId=MODEL, clientRequestToken=f"demo-{suffix}",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{inputs}/batch/dialogsum.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{outputs}/results/"}},
    )["jobArn"]
    console.print(f"Created batch job {arn}")
    job = _follow(aws["bedrock"], arn, len(records))
    console.print(f"Job ended [bold]{job['status']}[/]{': ' + job['message'] if job.get('message') else ''}")

    statuses = _received_statuses(aws["sqs"], queue_url, arn)
    console.print("EventBridge → SQS delivered: " + " → ".join(statuses))
    job_id = arn.rsplit("/", 1)[-1]
    manifest = json.loads(aws["s3"].get_object(Bucket=outputs, Key=f"results/{job_id}/manifest.json.out")["Body"].read())
    console.print(f"manifest.json.out: {manifest}")
    _show_results(aws["s3"], outputs, job_id, rows)


def _claude_body(prompt: str, max_tokens: int) -> dict:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "temperature": 0,
        "system": "You summarise conversations in one short sentence.",
        "messages": [{"role": "user", "content": prompt}],
    }


def _event_queue(aws: dict, suffix: str) -> str:
    """An SQS queue fed by a rule on Bedrock's job events, as Quarry's poll worker is fed."""
    name = f"quarry-demo-events-{suffix}"
    url = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    arn = aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws["events"].put_rule(Name=name, EventPattern=json.dumps(
        {"source": ["aws.bedrock"], "detail-type": ["Batch Inference Job State Change"]}))
    aws["events"].put_targets(Rule=name, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def _follow(bedrock, arn: str, total: int) -> dict:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("Submitted", total=total)
        while True:
            job = bedrock.get_model_invocation_job(jobIdentifier=arn)
            progress.update(task, description=f"{job['status']:<12}", completed=job.get("processedRecordCount", 0))
            if job["status"] in TERMINAL:
                return job
            time.sleep(1)


def _received_statuses(sqs, url: str, arn: str) -> list[str]:
    statuses: list[str] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return statuses
        for message in messages:
            detail = json.loads(message["Body"])["detail"]
            if detail["batchJobArn"] == arn:
                statuses.append(detail["status"])


def _show_results(s3, bucket: str, job_id: str, rows: list[dict]) -> None:
    data = s3.get_object(Bucket=bucket, Key=f"results/{job_id}/dialogsum.jsonl.out")["Body"].read()
    lines = sorted((json.loads(line) for line in data.splitlines() if line.strip()), key=lambda line: line["recordId"])
    table = Table(title=f"First summaries ({len(lines)} records in the output)", show_lines=True)
    table.add_column("record")
    table.add_column("model summary (SmolLM2 behind the Claude id)")
    table.add_column("human summary")
    for line in lines[:5]:
        index = int(line["recordId"].split("-")[1])
        output = line.get("modelOutput", {}).get("content", [{}])[0].get("text") or f"ERROR {line.get('error')}"
        table.add_row(line["recordId"], output.strip(), rows[index]["completion"])
    console.print(table)


if __name__ == "__main__":
    main()
