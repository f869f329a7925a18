"""A Bedrock that cannot be reached (restarting, a network fault) is a RetryableError from every
call of the Bedrock adapters, never a crash: a crash counts towards failing the run, a retry does
not. Real aiobotocore clients against a loopback port nothing listens on."""
from __future__ import annotations

import pytest
from aiobotocore.session import get_session
from botocore.config import Config

from infra.processes import free_port
from shared.adapters.bedrock import BatchJobs, Runtime
from shared.errors import RetryableError
from tests.unit.test_handlers import a_job

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abcdefghijkl"


@pytest.fixture
async def unreachable():
    config = Config(region_name="us-east-1", retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    session = get_session()
    async with session.create_client("bedrock", endpoint_url=url, config=config, aws_access_key_id="x",
                                     aws_secret_access_key="x") as bedrock, \
            session.create_client("bedrock-runtime", endpoint_url=url, config=config, aws_access_key_id="x",
                                  aws_secret_access_key="x") as runtime:
        yield BatchJobs(bedrock, role_arn="arn:aws:iam::123456789012:role/r", timeout_hours=24), Runtime(runtime)


@pytest.mark.parametrize("call", [
    lambda jobs, runtime: jobs.get(ARN),
    lambda jobs, runtime: jobs.active_job_names("anthropic.claude-3-haiku-20240307-v1:0"),
    lambda jobs, runtime: jobs.stop(ARN),
    lambda jobs, runtime: jobs.create(a_job()),
    lambda jobs, runtime: jobs.foundation_model_ids(),
    lambda jobs, runtime: runtime.invoke("anthropic.claude-3-haiku-20240307-v1:0", {"messages": []}),
], ids=["get", "active_job_names", "stop", "create", "foundation_model_ids", "invoke"])
async def test_given_bedrock_unreachable_when_called_then_the_adapter_raises_a_retryable_error(unreachable, call):
    jobs, runtime = unreachable

    with pytest.raises(RetryableError, match="Could not connect"):
        await call(jobs, runtime)
