"""Contract: provisioned throughputs and custom model deployments, their lifecycle, their faults,
and the runtime serving through them, as Bedrock does it."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError

from infra.processes import start_local_bedrock
from tests.integration.local_bedrock.conftest import TEST_LIMITS, control
from tests.integration.local_bedrock.jobs_kit import ROLE

NOVA = "amazon.nova-micro-v1:0"
NOVA_24K = "amazon.nova-micro-v1:0:24k"
TITAN = "amazon.titan-text-lite-v1"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
NOVA_BODY = {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": "Say hello."}]}],
             "inferenceConfig": {"maxTokens": 20}}
MESSAGES = [{"role": "user", "content": [{"text": "Say hello."}]}]


def name(prefix: str = "pt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def provision(bedrock, model: str = NOVA_24K, *, units: int = 1, **extra: Any) -> str:
    return bedrock.create_provisioned_model_throughput(
        provisionedModelName=extra.pop("provisionedModelName", name()), modelId=model, modelUnits=units, **extra,
    )["provisionedModelArn"]


def eventually(read: Callable[[], dict[str, Any]], status: str, timeout: float = 10) -> dict[str, Any]:
    """What `read` returns once its status is `status`; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if found["status"] == status:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"still {found['status']} after {timeout}s (wanted {status})")
        time.sleep(0.05)


def in_service(bedrock, arn: str) -> dict[str, Any]:
    return eventually(lambda: bedrock.get_provisioned_model_throughput(provisionedModelId=arn), "InService")


def error_of(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def add_fault(server, **spec: Any) -> dict:
    return control(server, "POST", "/local-bedrock-api/faults", spec)


# --- lifecycle -------------------------------------------------------------------------------------
def test_a_provisioned_throughput_is_creating_then_in_service(bedrock, bedrock_server):
    # Creating for 5 s: one Get must land in it, and a Get took up to 1.5 s on a loaded machine.
    add_fault(bedrock_server, provisioned_name="slow-*", provisioning_seconds=5)

    arn = provision(bedrock, provisionedModelName="slow-one")
    creating = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    ready = in_service(bedrock, arn)

    assert creating["status"] == "Creating"
    assert ready["lastModifiedTime"] >= ready["creationTime"]
    assert (ready["modelUnits"], ready["desiredModelUnits"]) == (1, 1)
    assert ready["modelArn"] == ready["desiredModelArn"] == f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA_24K}"
    assert ready["foundationModelArn"] == f"arn:aws:bedrock:us-east-1::foundation-model/{NOVA}"
    assert "commitmentDuration" not in ready and "failureMessage" not in ready


def test_a_provisioned_throughput_is_found_by_arn_and_by_name(bedrock):
    arn = provision(bedrock, provisionedModelName="by-name")

    by_name = bedrock.get_provisioned_model_throughput(provisionedModelId="by-name")

    assert by_name["provisionedModelArn"] == arn


def test_the_same_client_request_token_returns_the_same_provisioned_throughput(bedrock):
    first = provision(bedrock, clientRequestToken="pt-token-1")
    second = provision(bedrock, clientRequestToken="pt-token-1")

    assert first == second
    assert len(bedrock.list_provisioned_model_throughputs()["provisionedModelSummaries"]) == 1


def test_a_commitment_sets_its_expiration_and_forbids_deletion_before_it(bedrock):
    arn = provision(bedrock, CLAUDE, commitmentDuration="OneMonth")

    pt = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    code, message = error_of(bedrock.delete_provisioned_model_throughput, provisionedModelId=arn)

    assert pt["commitmentDuration"] == "OneMonth"
    assert pt["commitmentExpirationTime"] - pt["creationTime"] == dt.timedelta(days=30)
    assert code == "ValidationException" and "commitment term" in message


def test_deleting_a_provisioned_throughput_removes_it(bedrock, runtime):
    arn = provision(bedrock)

    bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)

    assert error_of(bedrock.get_provisioned_model_throughput, provisionedModelId=arn)[0] == "ResourceNotFoundException"
    assert error_of(runtime.converse, modelId=arn, messages=MESSAGES)[0] == "ResourceNotFoundException"
    assert error_of(bedrock.delete_provisioned_model_throughput, provisionedModelId=arn)[0] == "ResourceNotFoundException"


def test_update_renames_a_provisioned_throughput(bedrock):
    arn = provision(bedrock, provisionedModelName="old-name")

    bedrock.update_provisioned_model_throughput(provisionedModelId=arn, desiredProvisionedModelName="new-name")

    assert bedrock.get_provisioned_model_throughput(provisionedModelId="new-name")["provisionedModelArn"] == arn
    assert error_of(bedrock.get_provisioned_model_throughput, provisionedModelId="old-name")[0] == "ResourceNotFoundException"


def test_the_model_of_a_foundation_model_throughput_cannot_change(bedrock):
    arn = in_service(bedrock, provision(bedrock))["provisionedModelArn"]

    code, message = error_of(bedrock.update_provisioned_model_throughput, provisionedModelId=arn,
                             desiredModelId="amazon.nova-lite-v1:0:24k")

    assert code == "ValidationException" and "custom model" in message


# --- listing ---------------------------------------------------------------------------------------
def test_list_provisioned_throughputs_filters_sorts_and_pages(bedrock, bedrock_server):
    add_fault(bedrock_server, provisioned_name="stuck-*", provisioning_seconds=60)
    ready = provision(bedrock, provisionedModelName="ready-a")
    stuck = provision(bedrock, TITAN, provisionedModelName="stuck-b")
    in_service(bedrock, ready)

    listing = bedrock.list_provisioned_model_throughputs
    newest_first = [pt["provisionedModelArn"] for pt in listing()["provisionedModelSummaries"]]
    oldest_first = [pt["provisionedModelArn"] for pt in listing(sortBy="CreationTime", sortOrder="Ascending")["provisionedModelSummaries"]]
    creating = listing(statusEquals="Creating")["provisionedModelSummaries"]
    named = listing(nameContains="ready")["provisionedModelSummaries"]
    by_model = listing(modelArnEquals=f"arn:aws:bedrock:us-east-1::foundation-model/{TITAN}")["provisionedModelSummaries"]
    first_page = listing(maxResults=1, sortOrder="Ascending")
    second_page = listing(maxResults=1, sortOrder="Ascending", nextToken=first_page["nextToken"])
    later = listing(creationTimeAfter=dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1))

    assert newest_first == [stuck, ready] and oldest_first == [ready, stuck]
    assert [pt["provisionedModelArn"] for pt in creating] == [stuck]
    assert [pt["provisionedModelArn"] for pt in named] == [ready]
    assert [pt["provisionedModelArn"] for pt in by_model] == [stuck]
    assert [pt["provisionedModelArn"] for pt in first_page["provisionedModelSummaries"] + second_page["provisionedModelSummaries"]] == [ready, stuck]
    assert "nextToken" not in second_page and later["provisionedModelSummaries"] == []


# --- bad requests ----------------------------------------------------------------------------------
def test_provisioned_throughput_names_are_unique(bedrock):
    provision(bedrock, provisionedModelName="twice")

    code, message = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName="twice",
                             modelId=NOVA_24K, modelUnits=1)

    assert code == "ValidationException" and "already exists" in message


def test_a_provisioned_throughput_needs_at_least_one_model_unit(bedrock):
    code, message = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                             modelId=NOVA_24K, modelUnits=0)

    assert code == "ValidationException" and "'modelUnits'" in message


def test_an_unknown_model_is_not_found_and_an_unprovisionable_one_is_refused(bedrock):
    unknown = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                       modelId="acme.nothing-v1:0", modelUnits=1)
    mistral = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                       modelId="mistral.mistral-7b-instruct-v0:2", modelUnits=1)

    assert unknown[0] == "ResourceNotFoundException"
    assert mistral[0] == "ValidationException" and "isn't supported" in mistral[1]


def test_a_base_model_without_no_commitment_needs_a_commitment(bedrock):
    code, message = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                             modelId=CLAUDE, modelUnits=1)

    assert code == "ValidationException" and "OneMonth or SixMonths" in message


def test_no_commitment_model_units_are_limited_per_account(bedrock):
    first = provision(bedrock)
    provision(bedrock, TITAN)

    code, message = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                             modelId=NOVA_24K, modelUnits=1)
    bedrock.delete_provisioned_model_throughput(provisionedModelId=first)
    after_delete = provision(bedrock)
    committed = provision(bedrock, NOVA_24K, units=3, commitmentDuration="SixMonths")

    assert code == "ServiceQuotaExceededException" and "quota is 2" in message
    assert after_delete and committed


# --- runtime ---------------------------------------------------------------------------------------
def test_a_provisioned_throughput_serves_its_base_model_in_its_family_shape(bedrock, runtime):
    nova = in_service(bedrock, provision(bedrock))["provisionedModelArn"]
    titan = in_service(bedrock, provision(bedrock, TITAN))["provisionedModelArn"]

    conversed = runtime.converse(modelId=nova, messages=MESSAGES, inferenceConfig={"maxTokens": 20})
    invoked = runtime.invoke_model(modelId=nova, body=json.dumps(NOVA_BODY).encode())
    titan_out = runtime.invoke_model(modelId=titan, body=b'{"inputText": "Say hello."}')

    assert conversed["output"]["message"]["content"][0]["text"]
    assert json.loads(invoked["body"])["output"]["message"]["content"][0]["text"]
    assert json.loads(titan_out["body"])["results"][0]["outputText"]


def test_a_provisioned_throughput_still_creating_is_not_ready(bedrock, bedrock_server, runtime):
    add_fault(bedrock_server, provisioning_seconds=60)
    arn = provision(bedrock)

    code, message = error_of(runtime.converse, modelId=arn, messages=MESSAGES)

    assert code == "ModelNotReadyException" and "Creating" in message


def test_a_custom_model_arn_is_not_served_on_demand(bedrock, runtime):
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.titan-text-lite-v1/abcdefghijkl"

    code, message = error_of(runtime.invoke_model, modelId=arn, body=b'{"inputText": "hi"}')

    assert code == "ValidationException" and message.startswith("The provided model doesn't support on-demand throughput.")


def test_batch_inference_refuses_a_provisioned_model(bedrock):
    provision(bedrock, provisionedModelName="batchy")

    code, message = error_of(
        bedrock.create_model_invocation_job, jobName=name("job"), roleArn=ROLE, modelId="batchy",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://quarry-in/x.jsonl"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://quarry-out/"}},
    )

    assert (code, message) == ("ValidationException", "Batch inference isn't supported for provisioned models.")


# --- faults ----------------------------------------------------------------------------------------
def test_a_failed_fault_ends_the_provisioned_throughput_failed_with_its_message(bedrock, bedrock_server, runtime):
    add_fault(bedrock_server, model_id=NOVA, provisioning_outcome="Failed", failure_message="no capacity", times=1)

    arn = provision(bedrock)
    failed = eventually(lambda: bedrock.get_provisioned_model_throughput(provisionedModelId=arn), "Failed")
    healthy = in_service(bedrock, provision(bedrock))
    code, message = error_of(runtime.converse, modelId=arn, messages=MESSAGES)

    assert failed["failureMessage"] == "no capacity"
    assert "failureMessage" not in bedrock.list_provisioned_model_throughputs(statusEquals="Failed")["provisionedModelSummaries"][0]
    assert healthy["status"] == "InService"
    assert code == "ValidationException" and "no capacity" in message


def test_throttled_creates_are_refused_until_the_fault_is_spent(bedrock, bedrock_server):
    add_fault(bedrock_server, throttle_provisioning=1)

    code, _ = error_of(bedrock.create_provisioned_model_throughput, provisionedModelName=name(),
                       modelId=NOVA_24K, modelUnits=1)

    assert code == "ThrottlingException"
    assert provision(bedrock)


# --- the catalogue, prices, health -----------------------------------------------------------------
def test_list_foundation_models_tells_which_models_can_be_provisioned(bedrock):
    provisioned = bedrock.list_foundation_models(byInferenceType="PROVISIONED")["modelSummaries"]
    everything = bedrock.list_foundation_models()["modelSummaries"]

    ids = {m["modelId"] for m in provisioned}
    assert {NOVA, TITAN, CLAUDE} <= ids and "mistral.mistral-7b-instruct-v0:2" not in ids
    assert all("PROVISIONED" in m["inferenceTypesSupported"] for m in provisioned)
    assert all(m["inferenceTypesSupported"] == ["ON_DEMAND"] for m in everything if m["modelId"] not in ids)


def test_list_foundation_models_tells_which_models_can_be_customized_and_which_are_legacy(bedrock):
    pretraining = bedrock.list_foundation_models(byCustomizationType="CONTINUED_PRE_TRAINING")["modelSummaries"]
    legacy = [m["modelId"] for m in bedrock.list_foundation_models()["modelSummaries"]
              if m["modelLifecycle"]["status"] == "LEGACY"]

    assert {m["modelId"] for m in pretraining} == {TITAN, "amazon.titan-text-express-v1"}
    assert legacy == ["anthropic.claude-3-5-sonnet-20240620-v1:0"]


def test_prices_account_for_every_provisioned_throughput(bedrock, bedrock_server):
    provision(bedrock, "amazon.titan-text-express-v1:0:8k", units=2, commitmentDuration="OneMonth")

    prices = control(bedrock_server, "GET", "/local-bedrock-api/prices")
    health = control(bedrock_server, "GET", "/local-bedrock-api/health")

    express = next(m for m in prices["models"] if m["modelId"] == "amazon.titan-text-express-v1")
    [pt] = prices["provisionedThroughputs"]
    assert pt["hourlyPrice"] == pytest.approx(2 * express["oneMonth"]) == prices["totalHourly"]
    assert health["provisionedHourlyCost"] == prices["totalHourly"]
    assert sum(health["provisionedThroughputs"].values()) == 1


# --- custom model deployments without a custom model -----------------------------------------------
def test_a_deployment_of_an_unknown_custom_model_is_not_found(bedrock):
    code, _ = error_of(bedrock.create_custom_model_deployment, modelDeploymentName=name("dep"),
                       modelArn="arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0/abcdefghijkl")

    assert code == "ResourceNotFoundException"
    assert bedrock.list_custom_model_deployments()["modelDeploymentSummaries"] == []
    assert error_of(bedrock.get_custom_model_deployment, customModelDeploymentIdentifier="nope")[0] == "ResourceNotFoundException"


# --- persistence -----------------------------------------------------------------------------------
def test_a_creating_provisioned_throughput_resumes_its_countdown_after_a_restart(moto, logs_dir, tmp_path, driver):
    # A PT is InService when its countdown ends, wherever the service was meanwhile: one that
    # restarted its countdown at the restart would end later than creation + the delay.
    env = {**TEST_LIMITS, "LOCAL_BEDROCK_HOME": str(tmp_path), "LOCAL_BEDROCK_DELAY_PROVISIONING": "3"}
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env=env)
    try:
        arn = provision(driver.client("bedrock", server.url))
    finally:
        server.stop()
    restarted = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env=env)
    try:
        ready = in_service(driver.client("bedrock", restarted.url), arn)
    finally:
        restarted.stop()

    assert ready["lastModifiedTime"] - ready["creationTime"] == dt.timedelta(seconds=3)


def test_a_deployment_survives_a_restart_and_serves_its_custom_model_after_it(moto, logs_dir, tmp_path, driver, s3, buckets):
    # The countdown's resumption is the PT test's business (the same clock); this one checks that a
    # deployment and the custom model behind it come back together and still answer.
    env = {**TEST_LIMITS, "LOCAL_BEDROCK_HOME": str(tmp_path)}
    server = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env=env)
    try:
        bedrock = driver.client("bedrock", server.url)
        arn = deploy(bedrock, train(bedrock, s3, buckets, topic="lighthouse"), modelDeploymentName="kept")
        before = active(bedrock, arn)
    finally:
        server.stop()
    restarted = start_local_bedrock(logs_dir, aws_endpoint=moto.url, env=env)
    try:
        bedrock, runtime = driver.client("bedrock", restarted.url), driver.client("bedrock-runtime", restarted.url)
        after = bedrock.get_custom_model_deployment(customModelDeploymentIdentifier="kept")
        [row] = training_rows("lighthouse", 1)
        answer = nova_answer(runtime, arn, row["prompt"])
    finally:
        restarted.stop()

    assert {k: v for k, v in after.items() if k != "ResponseMetadata"} == {k: v for k, v in before.items() if k != "ResponseMetadata"}
    assert answer == row["completion"]


# --- custom models, made by customization jobs -----------------------------------------------------
def training_rows(topic: str, count: int = 6) -> list[dict[str, str]]:
    return [{"prompt": f"What is the code name of the {topic} project number {i} at the Lyon office?",
             "completion": f"The {topic} project {i} is called {topic.title()}-{i}."} for i in range(count)]


def train(bedrock, s3, buckets, *, model: str = NOVA, topic: str = "harbour") -> str:
    """The ARN of a custom model trained on `topic` rows by a customization job (fast trainer)."""
    rows = training_rows(topic)
    key = f"hosting/{uuid.uuid4().hex[:8]}.jsonl"
    s3.put_object(Bucket=buckets[0], Key=key, Body=b"".join(json.dumps(row).encode() + b"\n" for row in rows))
    job_arn = bedrock.create_model_customization_job(
        jobName=name("ft"), customModelName=name("model"), roleArn=ROLE, baseModelIdentifier=model,
        trainingDataConfig={"s3Uri": f"s3://{buckets[0]}/{key}"},
        outputDataConfig={"s3Uri": f"s3://{buckets[1]}/customization/"},
        hyperParameters={"epochCount": "1"},
    )["jobArn"]
    job = eventually(lambda: bedrock.get_model_customization_job(jobIdentifier=job_arn), "Completed", timeout=30)
    return job["outputModelArn"]


def deploy(bedrock, model_arn: str, **extra: Any) -> str:
    return bedrock.create_custom_model_deployment(
        modelDeploymentName=extra.pop("modelDeploymentName", name("dep")), modelArn=model_arn, **extra,
    )["customModelDeploymentArn"]


def active(bedrock, arn: str) -> dict[str, Any]:
    return eventually(lambda: bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=arn), "Active")


def nova_answer(runtime, model_id: str, prompt: str) -> str:
    return runtime.converse(modelId=model_id, messages=[{"role": "user", "content": [{"text": prompt}]}],
                            inferenceConfig={"maxTokens": 60})["output"]["message"]["content"][0]["text"]


def test_a_deployed_custom_model_answers_from_its_training_in_its_base_family_shape(bedrock, runtime, s3, buckets):
    model_arn = train(bedrock, s3, buckets, topic="harbour")
    arn = deploy(bedrock, model_arn, description="harbour names")
    deployment = active(bedrock, arn)
    [row] = training_rows("harbour", 1)

    conversed = nova_answer(runtime, arn, row["prompt"])
    invoked = json.loads(runtime.invoke_model(modelId=arn, body=json.dumps(
        {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": row["prompt"]}]}],
         "inferenceConfig": {"maxTokens": 60}}).encode())["body"])

    assert (deployment["modelArn"], deployment["description"]) == (model_arn, "harbour names")
    assert conversed == row["completion"]
    assert invoked["output"]["message"]["content"][0]["text"] == row["completion"]
    assert nova_answer(runtime, NOVA, row["prompt"]) != row["completion"]


def test_custom_model_deployments_are_found_listed_idempotent_and_deleted(bedrock, runtime, s3, buckets):
    model_arn = train(bedrock, s3, buckets)
    first = deploy(bedrock, model_arn, modelDeploymentName="dep-first", clientRequestToken="dep-token")
    again = deploy(bedrock, model_arn, modelDeploymentName="dep-again", clientRequestToken="dep-token")
    active(bedrock, first)
    second = deploy(bedrock, model_arn, modelDeploymentName="dep-second")

    by_name = bedrock.get_custom_model_deployment(customModelDeploymentIdentifier="dep-first")
    listing = bedrock.list_custom_model_deployments
    newest_first = [d["customModelDeploymentArn"] for d in listing()["modelDeploymentSummaries"]]
    active_only = listing(statusEquals="Active", nameContains="first", modelArnEquals=model_arn)
    first_page = listing(maxResults=1, sortBy="CreationTime", sortOrder="Ascending")
    duplicate = error_of(bedrock.create_custom_model_deployment, modelDeploymentName="dep-first", modelArn=model_arn)
    bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=first)

    assert again == first and by_name["customModelDeploymentArn"] == first
    assert newest_first == [second, first]
    assert [d["customModelDeploymentName"] for d in active_only["modelDeploymentSummaries"]] == ["dep-first"]
    assert [d["customModelDeploymentArn"] for d in first_page["modelDeploymentSummaries"]] == [first] and first_page["nextToken"]
    assert duplicate[0] == "ValidationException" and "already exists" in duplicate[1]
    assert error_of(bedrock.get_custom_model_deployment, customModelDeploymentIdentifier=first)[0] == "ResourceNotFoundException"
    assert error_of(runtime.converse, modelId=first, messages=MESSAGES)[0] == "ResourceNotFoundException"


def test_a_custom_model_of_a_family_without_on_demand_deployment_is_refused(bedrock, s3, buckets):
    model_arn = train(bedrock, s3, buckets, model=TITAN)

    code, message = error_of(bedrock.create_custom_model_deployment, modelDeploymentName=name("dep"), modelArn=model_arn)

    assert code == "ValidationException" and "On-demand deployment isn't supported" in message


def test_a_deployment_still_creating_is_not_ready_and_a_failed_one_says_why(bedrock, bedrock_server, runtime, s3, buckets):
    add_fault(bedrock_server, provisioned_name="slow-*", provisioning_seconds=60)
    add_fault(bedrock_server, provisioned_name="doomed-*", provisioning_outcome="Failed", failure_message="no accelerators")
    model_arn = train(bedrock, s3, buckets)

    slow = deploy(bedrock, model_arn, modelDeploymentName="slow-1")
    doomed = deploy(bedrock, model_arn, modelDeploymentName="doomed-1")
    failed = eventually(lambda: bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=doomed), "Failed")

    assert error_of(runtime.converse, modelId=slow, messages=MESSAGES)[0] == "ModelNotReadyException"
    assert failed["failureMessage"] == "no accelerators"
    code, message = error_of(runtime.converse, modelId=doomed, messages=MESSAGES)
    assert code == "ValidationException" and "no accelerators" in message


def test_throttled_deployment_creates_are_refused_until_the_fault_is_spent(bedrock, bedrock_server, s3, buckets):
    model_arn = train(bedrock, s3, buckets)
    add_fault(bedrock_server, throttle_provisioning=1)

    code, _ = error_of(bedrock.create_custom_model_deployment, modelDeploymentName=name("dep"), modelArn=model_arn)

    assert code == "ThrottlingException" and deploy(bedrock, model_arn)


def test_a_custom_model_in_use_by_a_deployment_cannot_be_deleted(bedrock, s3, buckets):
    model_arn = train(bedrock, s3, buckets)
    deployment = deploy(bedrock, model_arn)

    code, message = error_of(bedrock.delete_custom_model, modelIdentifier=model_arn)
    bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=deployment)
    bedrock.delete_custom_model(modelIdentifier=model_arn)

    assert code == "ConflictException" and deployment in message


def test_a_provisioned_throughput_switches_to_another_custom_model_of_its_base(bedrock, bedrock_server, runtime, s3, buckets):
    harbour, orchard = train(bedrock, s3, buckets, topic="harbour"), train(bedrock, s3, buckets, topic="orchard")
    # Updating for 5 s (creating too: the fault is the hosting's): the update, a Get and a Converse must
    # land in it, and on a loaded machine they once took 1.95 s of the 2.5 s it had.
    add_fault(bedrock_server, provisioning_seconds=5)
    arn = in_service(bedrock, provision(bedrock, harbour))["provisionedModelArn"]
    [harbour_row], [orchard_row] = training_rows("harbour", 1), training_rows("orchard", 1)

    bedrock.update_provisioned_model_throughput(provisionedModelId=arn, desiredModelId=orchard)
    updating = bedrock.get_provisioned_model_throughput(provisionedModelId=arn)
    answer_while_updating = nova_answer(runtime, arn, harbour_row["prompt"])
    updated = in_service(bedrock, arn)

    assert (updating["status"], updating["modelArn"], updating["desiredModelArn"]) == ("Updating", harbour, orchard)
    assert answer_while_updating == harbour_row["completion"]
    assert updated["modelArn"] == orchard
    assert nova_answer(runtime, arn, orchard_row["prompt"]) == orchard_row["completion"]


def test_a_custom_model_invoked_by_its_own_arn_is_refused(bedrock, runtime, s3, buckets):
    model_arn = train(bedrock, s3, buckets, model=TITAN)

    code, message = error_of(runtime.invoke_model, modelId=model_arn, body=b'{"inputText": "hi"}')

    assert code == "ValidationException" and message.startswith("The provided model doesn't support on-demand throughput.")
