"""The in-memory fakes of the ports that the handler and watchdog tests take, fresh for each test."""
from __future__ import annotations

import pytest

from tests.unit.fakes import FakeBatchJobs, FakeQueues, FakeStore


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def queues() -> FakeQueues:
    return FakeQueues()


@pytest.fixture
def bedrock() -> FakeBatchJobs:
    return FakeBatchJobs()
