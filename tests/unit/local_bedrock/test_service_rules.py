"""Settings, request validation from botocore's models, faults and the job store."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from infra.local_bedrock import catalogue, protocol
from infra.local_bedrock.errors import BedrockError
from infra.local_bedrock.faults import FaultRegistry, FaultSpec, JobFaults
from infra.local_bedrock.jobs import JobStore
from infra.local_bedrock.settings import Settings

CLAUDE = catalogue.resolve("anthropic.claude-3-haiku-20240307-v1:0")


def create_params(name: str = "job-1", token: str | None = None) -> dict:
    params = {
        "jobName": name, "roleArn": "arn:aws:iam::123456789012:role/r", "modelId": CLAUDE.model_id,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://bucket/in/"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://bucket/out/"}},
    }
    return params | ({"clientRequestToken": token} if token else {})


def test_the_service_refuses_a_non_loopback_host():
    with pytest.raises(ValidationError, match="loopback only"):
        Settings(host="0.0.0.0")


def test_the_engine_map_overrides_the_default_engine_by_glob():
    settings = Settings(engine="real", engine_map={"amazon.titan-embed-*": "fast"})

    assert settings.engine_for("amazon.titan-embed-text-v2:0") == "fast"
    assert settings.engine_for(CLAUDE.model_id) == "real"


def test_a_request_is_validated_against_botocores_constraints():
    operation = protocol.operation("bedrock", "CreateModelInvocationJob")
    body = protocol.to_json(create_params(name="-bad") | {"timeoutDurationInHours": 500})

    with pytest.raises(BedrockError) as exc:
        protocol.parse_request(operation, path_params={}, query={}, headers={}, body=body)

    assert exc.value.message.startswith("2 validation errors detected: ")
    assert "Value '-bad' at 'jobName'" in exc.value.message
    assert "Value '500' at 'timeoutDurationInHours'" in exc.value.message


def test_query_parameters_are_typed_from_the_model():
    operation = protocol.operation("bedrock", "ListModelInvocationJobs")

    params = protocol.parse_request(operation, path_params={}, query={"maxResults": "5", "submitTimeAfter": "2026-01-01T00:00:00Z"},
                                    headers={}, body=b"")

    assert params["maxResults"] == 5 and params["submitTimeAfter"].year == 2026


def test_model_identifiers_resolve_from_ids_arns_and_profiles():
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{CLAUDE.model_id}"

    assert catalogue.resolve(arn) is catalogue.resolve(f"eu.{CLAUDE.model_id}") is CLAUDE
    with pytest.raises(catalogue.UnknownModel):
        catalogue.resolve("acme.model-v1")


def test_record_failures_are_stable_and_near_the_asked_rate():
    faults = JobFaults(record_error_rate=0.2)

    picks = [faults.record_fails("job", f"r{i}") for i in range(2000)]

    assert picks == [faults.record_fails("job", f"r{i}") for i in range(2000)]
    assert 0.15 < sum(picks) / len(picks) < 0.25


def test_a_fault_with_times_is_spent():
    registry = FaultRegistry()
    registry.add(FaultSpec(model_id=CLAUDE.model_id, outcome="Failed", times=1))

    first = registry.for_new_job(model_id=CLAUDE.model_id, job_name="a")
    second = registry.for_new_job(model_id=CLAUDE.model_id, job_name="b")

    assert (first.outcome, second.outcome) == ("Failed", None)


def test_a_job_name_glob_picks_jobs():
    registry = FaultRegistry()
    registry.add(FaultSpec(job_name="chaos-*", outcome="Expired"))

    assert registry.for_new_job(model_id=CLAUDE.model_id, job_name="chaos-7").outcome == "Expired"
    assert registry.for_new_job(model_id=CLAUDE.model_id, job_name="calm-7").outcome is None


def test_the_store_enforces_the_active_job_quota_per_model():
    store = JobStore(region="us-east-1", account_id="123456789012", max_active_per_model=1)
    store.create(params=create_params("a"), model=CLAUDE, faults=JobFaults())

    with pytest.raises(BedrockError) as exc:
        store.create(params=create_params("b"), model=CLAUDE, faults=JobFaults())

    assert exc.value.code == "ServiceQuotaExceededException"


def test_the_store_finds_a_job_by_its_token():
    store = JobStore(region="us-east-1", account_id="123456789012", max_active_per_model=5)
    job = store.create(params=create_params("a", token="tok-1"), model=CLAUDE, faults=JobFaults())

    assert store.by_token("tok-1") is job and store.by_token("tok-2") is None


def test_a_forged_next_token_is_a_validation_error():
    store = JobStore(region="us-east-1", account_id="123456789012", max_active_per_model=5)

    with pytest.raises(BedrockError) as exc:
        store.list({"nextToken": "garbage!"})
    assert exc.value.code == "ValidationException"
