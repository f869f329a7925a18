"""The whole local stack, as `quarry local up` starts it, on free ports in a temporary home."""
from __future__ import annotations

import json

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest

from infra.local_stack.mailsink import read_mail
from infra.local_stack.stack import LocalStack, StackConfig
from infra.processes import free_port
from shared.adapters.aws import async_clients
from shared.adapters.store import RunStore
from shared.domain.runs import Job, Run
from shared.settings import Settings

FAST_BEDROCK = {
    "LOCAL_BEDROCK_DELAY_SUBMITTED": "0.1",
    "LOCAL_BEDROCK_DELAY_VALIDATING": "0.1",
    "LOCAL_BEDROCK_DELAY_SCHEDULED": "0.1",
}


def running_stack(home: Path, *, worker_env: dict[str, str] | None = None,
                  poll_interval_s: int = 1) -> Iterator[LocalStack]:
    """A local stack in `home` on free ports (fast engine, fast Bedrock delays, workers polling every
    second unless told otherwise), with this process's AWS and Quarry settings pointed at it until
    the caller is done."""
    config = StackConfig(home=home, moto_port=free_port(), bedrock_port=free_port(), mail_http_port=free_port(),
                         smtp_port=free_port(), engine="fast", poll_interval_s=poll_interval_s,
                         worker_env=worker_env or {})
    stack = LocalStack(config)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAST_BEDROCK.items():
            patch.setenv(key, value)
        for key in [k for k in os.environ if k.startswith(("AWS_ENDPOINT_URL", "QUARRY_"))]:
            patch.delenv(key)
        try:
            stack.up(say=lambda line: None)
        except Exception:
            stack.down(say=lambda line: None)
            raise
        for key, value in config.env().items():
            patch.setenv(key, value)
        yield stack
        stack.down(say=lambda line: None)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    yield from running_stack(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def aws(stack) -> dict[str, Any]:
    return {name: boto3.client(name) for name in ("s3", "events", "sqs", "dynamodb")}


def load_run(run_id: str) -> tuple[Run | None, list[Job], set[str]]:
    """The run, its jobs, and every slot holder of its model, from DynamoDB."""
    async def read():
        settings = Settings()
        async with async_clients(settings, "dynamodb") as clients:
            store = RunStore(clients["dynamodb"], settings.table)
            run = await store.get_run(run_id)
            jobs = await store.list_jobs(run_id)
            holders = await store.slot_holders(run.spec.model_id) if run and run.spec else set()
            return run, jobs, holders
    return asyncio.run(read())


def latest_runs() -> list[Run]:
    async def read():
        settings = Settings()
        async with async_clients(settings, "dynamodb") as clients:
            return await RunStore(clients["dynamodb"], settings.table).list_runs(limit=50)
    return asyncio.run(read())


def wait_until(condition: Callable[[], Any], *, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_for(input_uri: str) -> Run | None:
    return next((run for run in latest_runs() if run.input_uri == input_uri), None)


def finished_run(input_uri: str, timeout: float = 90) -> Run:
    return wait_until(lambda: (r := run_for(input_uri)) is not None and r.terminal and r.notified_at and r,
                      timeout=timeout, what=f"a finished, notified run for {input_uri}")


def mail_about(stack: LocalStack, run_id: str) -> dict[str, str]:
    return wait_until(lambda: next((m for m in read_mail(stack.config.maildir) if run_id in m["body"]), None),
                      timeout=30, what=f"an email about run {run_id}")


def control(stack: LocalStack, method: str, path: str, body: dict | None = None) -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(stack.config.url(stack.config.bedrock_port) + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def sample(rows: int) -> bytes:
    lines = (Path(__file__).resolve().parents[2] / "infra" / "demo" / "dialogsum_sample.jsonl").read_bytes().splitlines()
    return b"\n".join(lines[:rows]) + b"\n"


def distinct_rows(rows: int) -> bytes:
    """`rows` DialogSum rows cycled from the sample, each with a prompt of its own: identical requests
    within a run are sent once (issue 10), so tests that need many jobs need distinct rows."""
    lines = [json.loads(line) for line in sample(300).splitlines()]
    out = []
    for i in range(rows):
        row = dict(lines[i % len(lines)])
        row["prompt"] = f"{row['prompt']}\n(copy {i // len(lines)})" if i >= len(lines) else row["prompt"]
        out.append(json.dumps(row).encode())
    return b"\n".join(out) + b"\n"
