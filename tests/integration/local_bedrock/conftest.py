"""Fixtures for the local Bedrock contract tests: a real moto server, the service as its own
process, and both SDKs to drive it."""
from __future__ import annotations

import json
import urllib.request
import uuid
from typing import Iterator

import pytest

from tests.support.drivers import AiobotocoreDriver, Boto3Driver
from infra.processes import Server, start_local_bedrock, start_moto

# Small quotas and short delays so every limit can be crossed in a test that runs in a second.
TEST_LIMITS = {
    "LOCAL_BEDROCK_MIN_RECORDS_PER_JOB": "100",
    "LOCAL_BEDROCK_MAX_RECORDS_PER_JOB": "500",
    "LOCAL_BEDROCK_MAX_RECORDS_PER_FILE": "400",
    "LOCAL_BEDROCK_MAX_FILE_BYTES": "120000",
    "LOCAL_BEDROCK_MAX_JOB_BYTES": "200000",
    "LOCAL_BEDROCK_MAX_ACTIVE_JOBS_PER_MODEL": "20",
    "LOCAL_BEDROCK_DELAY_SUBMITTED": "0.05",
    "LOCAL_BEDROCK_DELAY_VALIDATING": "0.05",
    "LOCAL_BEDROCK_DELAY_SCHEDULED": "0.05",
    "LOCAL_BEDROCK_DELAY_PROVISIONING": "0.2",
    "LOCAL_BEDROCK_DELAY_DEPLOYMENT": "0.2",
    "LOCAL_BEDROCK_BATCH_SIZE": "16",
    "LOCAL_BEDROCK_SHUFFLE_WINDOW": "50",
    # Customization: small data quotas, a fast clock for the fast trainer.
    "LOCAL_BEDROCK_CUSTOMIZATION_MIN_TRAINING_RECORDS": "4",
    "LOCAL_BEDROCK_CUSTOMIZATION_MAX_FINE_TUNING_RECORDS": "60",
    "LOCAL_BEDROCK_CUSTOMIZATION_MAX_PRE_TRAINING_RECORDS": "80",
    "LOCAL_BEDROCK_CUSTOMIZATION_MAX_VALIDATION_RECORDS": "20",
    "LOCAL_BEDROCK_CUSTOMIZATION_MAX_RECORD_TOKENS": '{"titan-text": 2000, "nova": 2000, "llama": 2000, "cohere": 2000}',
    "LOCAL_BEDROCK_CUSTOMIZATION_SECONDS_PER_STEP": "0.002",
    "LOCAL_BEDROCK_CUSTOMIZATION_VALIDATION_SECONDS": "0.05",
    "LOCAL_BEDROCK_CUSTOMIZATION_DATA_PROCESSING_SECONDS": "0.05",
    "LOCAL_BEDROCK_CUSTOMIZATION_METRICS_EVERY_STEPS": "5",
}


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def moto(logs_dir) -> Iterator[Server]:
    server = start_moto(logs_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def aws_environment(moto: Server) -> Iterator[None]:
    """Credentials and the moto endpoint for every SDK client the tests build."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_ENDPOINT_URL", moto.url)
        yield


@pytest.fixture(scope="session")
def bedrock_server(moto: Server, logs_dir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A home of its own: the service keeps its state there, and engineers' test runs must not share it.
    home = tmp_path_factory.mktemp("bedrock-home")
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env={**TEST_LIMITS, "LOCAL_BEDROCK_HOME": str(home)})
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["boto3", "aiobotocore"])
def driver(request: pytest.FixtureRequest):
    """Each contract test runs once through boto3 and once through aiobotocore."""
    driver = Boto3Driver() if request.param == "boto3" else AiobotocoreDriver()
    yield driver
    driver.close()


@pytest.fixture
def bedrock(driver, bedrock_server: Server):
    control(bedrock_server, "POST", "/local-bedrock-api/reset")
    return driver.client("bedrock", bedrock_server.url)


@pytest.fixture
def runtime(driver, bedrock_server: Server):
    return driver.client("bedrock-runtime", bedrock_server.url)


@pytest.fixture
def s3(driver):
    return driver.client("s3")


@pytest.fixture
def buckets(s3) -> tuple[str, str]:
    """Fresh input and output buckets for one test."""
    suffix = uuid.uuid4().hex[:10]
    names = (f"quarry-in-{suffix}", f"quarry-out-{suffix}")
    for name in names:
        s3.create_bucket(Bucket=name)
    return names


def control(server: Server, method: str, path: str, body: dict | None = None) -> dict:
    """Call the service's control endpoint (faults, reset)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")
