"""Fixtures shared by the data-plane tests."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from shared.adapters.aws import client_config
from shared.settings import Settings


@pytest.fixture
def s3_client(monkeypatch):
    """An in-process S3 (moto) behind a client with the workers' settings (shared/adapters/aws.py),
    checksums included."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("s3", config=client_config(Settings(region="us-east-1")))
