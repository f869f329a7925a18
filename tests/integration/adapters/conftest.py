"""Adapters against a real moto server, with resources made from the AWS template."""
from __future__ import annotations

import boto3
import pytest

from infra.local_stack import resources
from infra.processes import start_moto


@pytest.fixture(scope="module")
def moto_env(tmp_path_factory: pytest.TempPathFactory):
    server = start_moto(tmp_path_factory.mktemp("moto-logs"))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"AWS_ENDPOINT_URL": server.url, "AWS_ACCESS_KEY_ID": "testing",
                           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(key, value)
        resources.create_all({name: boto3.client(name) for name in ("s3", "sqs", "dynamodb", "sns", "events")})
        yield server
    server.stop()
