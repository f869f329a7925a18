"""A local stack for crash tests: its own processes (workers are killed and restarted here, so
other tests' stack is never touched), with a fast watchdog and short visibility timeouts so a
crash is recovered in seconds rather than minutes."""
from __future__ import annotations

from typing import Iterator

import boto3
import pytest

from infra.local_stack.stack import LocalStack
from tests.e2e.conftest import running_stack

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
    yield from running_stack(tmp_path_factory.mktemp("recovery-stack"), worker_env={**RECOVERY, **worker_env})


def clients() -> dict:
    return {name: boto3.client(name) for name in ("s3", "events", "sqs", "dynamodb", "bedrock")}
