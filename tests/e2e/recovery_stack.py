"""A local stack for crash tests: its own processes (workers are killed and restarted here, so
other tests' stack is never touched), with a fast watchdog and short visibility timeouts so a
crash is recovered in seconds rather than minutes."""
from __future__ import annotations

import os
from typing import Iterator

import boto3
import pytest

from infra.local_stack.stack import LocalStack, StackConfig
from infra.processes import free_port
from tests.e2e.conftest import FAST_BEDROCK

RECOVERY = {
    "QUARRY_WATCHDOG_INTERVAL_S": "1",
    "QUARRY_STALL_AFTER_S": "8",
    "QUARRY_OUTBOX_GRACE_S": "2",
    "QUARRY_VISIBILITY_TIMEOUT_S": "10",
    # A worker killed while staging or collecting holds the run's lease: taken over after this.
    "QUARRY_RUN_LEASE_S": "5",
    "QUARRY_MAX_REDRIVES": "4",
    "QUARRY_MAX_CRASHES": "3",
}


def recovery_stack(tmp_path_factory: pytest.TempPathFactory, **worker_env: str) -> Iterator[LocalStack]:
    config = StackConfig(home=tmp_path_factory.mktemp("recovery-stack"), moto_port=free_port(),
                         bedrock_port=free_port(), mail_http_port=free_port(), smtp_port=free_port(), engine="fast",
                         poll_interval_s=1, worker_env={**RECOVERY, **worker_env})
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


def clients() -> dict:
    return {name: boto3.client(name) for name in ("s3", "events", "sqs", "dynamodb", "bedrock")}
