"""Provisioned throughputs and custom model deployments of custom models: the rules, the clock,
what the runtime is served, and state that survives a restart. Custom models are inserted here
directly; the contract tests make them through customization jobs."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from infra.local_bedrock import catalogue
from infra.local_bedrock.custom_models import CustomModel, CustomModelStore
from infra.local_bedrock.errors import BedrockError
from infra.local_bedrock.faults import FaultRegistry, FaultSpec
from infra.local_bedrock.hosting import Hosting
from infra.local_bedrock.persistence import StateDir
from infra.local_bedrock.settings import Delays, Settings

NOVA = catalogue.resolve("amazon.nova-micro-v1:0")
TITAN = catalogue.resolve("amazon.titan-text-lite-v1")
LLAMA = catalogue.resolve("meta.llama3-1-8b-instruct-v1:0")
START = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def custom_model(base: catalogue.FoundationModel, model_id: str, *, status: str = "Active") -> CustomModel:
    return CustomModel(
        model_arn=f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{base.model_id}/{model_id}",
        model_name=f"model-{model_id}", job_arn=f"arn:aws:bedrock:us-east-1:123456789012:model-customization-job/{model_id}",
        job_name=f"job-{model_id}", base_model=base, customization_type="FINE_TUNING", engine="fast",
        weights_dir=Path("/nonexistent"), creation_time=START, hyper_parameters={}, training_data_config={},
        output_data_config={}, status=status,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def models() -> CustomModelStore:
    store = CustomModelStore(region="us-east-1", account_id="123456789012")
    for model in (custom_model(NOVA, "nova00000001"), custom_model(NOVA, "nova00000002"),
                  custom_model(TITAN, "titan0000001"), custom_model(LLAMA, "llama0000001"),
                  custom_model(NOVA, "novatraining", status="Creating")):
        store.add(model)
    return store


@pytest.fixture
def faults() -> FaultRegistry:
    return FaultRegistry()


@pytest.fixture
def hosting(tmp_path, clock, models, faults) -> Hosting:
    return make_hosting(tmp_path, clock, models, faults)


def make_hosting(home: Path, clock: Clock, models: CustomModelStore, faults: FaultRegistry) -> Hosting:
    settings = Settings(home=home, delays=Delays(provisioning=10, deployment=5))
    return Hosting(settings, custom_models=models, faults=faults, state=StateDir(home), clock=clock)


def provision(hosting: Hosting, model_id: str, name: str = "pt", **extra) -> str:
    params = {"provisionedModelName": name, "modelId": model_id, "modelUnits": 1, **extra}
    return hosting.create_provisioned(params)["provisionedModelArn"]


def deploy(hosting: Hosting, model_arn: str, name: str = "dep", **extra) -> str:
    params = {"modelDeploymentName": name, "modelArn": model_arn, **extra}
    return hosting.create_deployment(params)["customModelDeploymentArn"]


def code_of(call, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(BedrockError) as exc:
        call(*args, **kwargs)
    return exc.value.code, exc.value.message


# --- provisioned throughput of a custom model ----------------------------------------------------------
def test_a_custom_model_throughput_serves_the_custom_weights_in_the_base_family(hosting, models, clock):
    custom = models.get("nova00000001")
    arn = provision(hosting, custom.model_arn)
    clock.advance(10)

    target = hosting.serving_target(arn)
    described = hosting.get_provisioned(arn)

    assert (target.model, target.custom) == (NOVA, custom)
    assert described["modelArn"] == custom.model_arn and described["foundationModelArn"] == NOVA.arn("us-east-1")


def test_a_custom_model_is_provisioned_by_name_too(hosting, models):
    arn = provision(hosting, "model-nova00000001")

    assert hosting.get_provisioned(arn)["modelArn"] == models.get("nova00000001").model_arn


def test_a_custom_model_not_yet_active_cannot_be_provisioned(hosting):
    code, message = code_of(provision, hosting, "model-novatraining")

    assert code == "ValidationException" and "Creating" in message


def test_a_custom_model_of_a_commitment_only_base_may_be_bought_without_commitment(hosting):
    assert provision(hosting, "model-llama0000001")
    assert code_of(provision, hosting, LLAMA.model_id, name="base")[0] == "ValidationException"


def test_updating_to_another_custom_model_of_the_base_serves_the_old_one_until_in_service(hosting, models, clock):
    old, new = models.get("nova00000001"), models.get("nova00000002")
    arn = provision(hosting, old.model_arn)
    clock.advance(10)

    hosting.update_provisioned({"provisionedModelId": arn, "desiredModelId": new.model_arn})
    updating = hosting.get_provisioned(arn)
    served_while_updating = hosting.serving_target(arn).custom
    clock.advance(10)
    done = hosting.get_provisioned(arn)

    assert (updating["status"], updating["modelArn"], updating["desiredModelArn"]) == ("Updating", old.model_arn, new.model_arn)
    assert served_while_updating == old
    assert (done["status"], done["modelArn"]) == ("InService", new.model_arn)
    assert hosting.serving_target(arn).custom == new


def test_a_custom_model_throughput_may_go_back_to_its_base_model(hosting, models, clock):
    arn = provision(hosting, models.get("nova00000001").model_arn)
    clock.advance(10)

    hosting.update_provisioned({"provisionedModelId": arn, "desiredModelId": "amazon.nova-micro-v1:0:24k"})
    clock.advance(10)

    assert hosting.serving_target(arn).custom is None
    assert hosting.get_provisioned(arn)["modelArn"].endswith("foundation-model/amazon.nova-micro-v1:0:24k")


def test_a_throughput_cannot_switch_to_a_model_of_another_base(hosting, models, clock):
    arn = provision(hosting, models.get("nova00000001").model_arn)
    clock.advance(10)

    code, message = code_of(hosting.update_provisioned, {"provisionedModelId": arn,
                                                         "desiredModelId": models.get("titan0000001").model_arn})

    assert code == "ValidationException" and "isn't derived from amazon.nova-micro-v1:0" in message


def test_the_model_of_a_throughput_still_creating_cannot_change(hosting, models):
    arn = provision(hosting, models.get("nova00000001").model_arn)

    code, _ = code_of(hosting.update_provisioned, {"provisionedModelId": arn, "desiredModelId": "model-nova00000002"})

    assert code == "ValidationException"


def test_a_custom_model_in_use_cannot_be_deleted_until_its_hosts_are(hosting, models, clock):
    nova, other = models.get("nova00000001"), models.get("nova00000002")
    pt = provision(hosting, nova.model_arn)
    deployment = deploy(hosting, other.model_arn)

    refused = [code_of(hosting.ensure_custom_model_unused, model)[0] for model in (nova, other)]
    hosting.delete_provisioned(pt)
    hosting.delete_deployment(deployment)

    assert refused == ["ConflictException", "ConflictException"]
    hosting.ensure_custom_model_unused(nova)
    hosting.ensure_custom_model_unused(other)


def test_a_custom_model_a_throughput_is_updating_to_is_in_use(hosting, models, clock):
    arn = provision(hosting, "model-nova00000001")
    clock.advance(10)
    hosting.update_provisioned({"provisionedModelId": arn, "desiredModelId": "model-nova00000002"})

    assert code_of(hosting.ensure_custom_model_unused, models.get("nova00000002"))[0] == "ConflictException"


def test_a_custom_model_throughput_costs_what_its_base_model_does(hosting, models):
    provision(hosting, models.get("titan0000001").model_arn, modelUnits=2, commitmentDuration="SixMonths")

    [pt] = hosting.prices()["provisionedThroughputs"]

    assert pt["hourlyPrice"] == pytest.approx(2 * TITAN.provisioned_price.six_months)


# --- custom model deployments ---------------------------------------------------------------------------
def test_a_deployment_is_creating_then_active_and_serves_the_custom_model(hosting, models, clock):
    custom = models.get("nova00000001")
    arn = deploy(hosting, custom.model_arn, description="for the demo")

    creating = hosting.get_deployment(arn)
    not_ready = code_of(hosting.serving_target, arn)[0]
    clock.advance(5)
    active = hosting.get_deployment("dep")

    assert (creating["status"], creating["description"]) == ("Creating", "for the demo")
    assert not_ready == "ModelNotReadyException"
    assert active["status"] == "Active" and active["lastUpdatedAt"] == START + dt.timedelta(seconds=5)
    assert hosting.serving_target(arn).custom == custom


def test_only_families_with_on_demand_custom_deployment_can_be_deployed(hosting, models):
    code, message = code_of(deploy, hosting, models.get("titan0000001").model_arn)

    assert code == "ValidationException" and "Nova Micro" in message


def test_deployment_names_are_unique_and_tokens_idempotent(hosting, models):
    first = deploy(hosting, models.get("nova00000001").model_arn, clientRequestToken="tok-1")
    again = deploy(hosting, models.get("nova00000001").model_arn, name="other", clientRequestToken="tok-1")

    assert first == again
    assert code_of(deploy, hosting, models.get("nova00000002").model_arn)[0] == "ValidationException"


def test_a_failed_fault_ends_a_deployment_failed(hosting, models, faults, clock):
    faults.add(FaultSpec(provisioned_name="doomed", provisioning_outcome="Failed", failure_message="out of chips"))
    arn = deploy(hosting, models.get("nova00000001").model_arn, name="doomed")
    clock.advance(5)

    described = hosting.get_deployment(arn)
    [summary] = hosting.list_deployments({"statusEquals": "Failed"})["modelDeploymentSummaries"]

    assert (described["status"], described["failureMessage"]) == ("Failed", "out of chips")
    assert summary["customModelDeploymentName"] == "doomed"
    assert code_of(hosting.serving_target, arn)[0] == "ValidationException"


def test_list_deployments_filters_by_model_and_name(hosting, models, clock):
    nova = deploy(hosting, models.get("nova00000001").model_arn, name="alpha")
    clock.advance(1)
    deploy(hosting, models.get("nova00000002").model_arn, name="beta")

    by_model = hosting.list_deployments({"modelArnEquals": models.get("nova00000001").model_arn})
    by_name = hosting.list_deployments({"nameContains": "et"})
    oldest = hosting.list_deployments({"sortOrder": "Ascending", "maxResults": 1})

    assert [d["customModelDeploymentArn"] for d in by_model["modelDeploymentSummaries"]] == [nova]
    assert [d["customModelDeploymentName"] for d in by_name["modelDeploymentSummaries"]] == ["beta"]
    assert [d["customModelDeploymentName"] for d in oldest["modelDeploymentSummaries"]] == ["alpha"] and oldest["nextToken"]


# --- the runtime ---------------------------------------------------------------------------------------
def test_a_custom_model_invoked_by_arn_or_name_is_refused_on_demand(hosting, models):
    by_arn = code_of(hosting.serving_target, models.get("nova00000001").model_arn)
    by_name = code_of(hosting.serving_target, "model-nova00000001")

    assert by_arn == by_name and by_arn[0] == "ValidationException"
    assert by_arn[1].startswith("The provided model doesn't support on-demand throughput.")


def test_a_foundation_model_id_is_not_hosting_business(hosting):
    assert hosting.serving_target("amazon.nova-micro-v1:0") is None


# --- state across a restart -----------------------------------------------------------------------------
def test_throughputs_and_deployments_survive_a_restart_and_resume_their_countdown(tmp_path, clock, models, faults):
    before = make_hosting(tmp_path, clock, models, faults)
    pt = provision(before, "model-nova00000001", clientRequestToken="pt-tok")
    deployment = deploy(before, models.get("nova00000002").model_arn)
    clock.advance(4)

    after = make_hosting(tmp_path, clock, models, faults)
    still = (after.get_provisioned(pt)["status"], after.get_deployment(deployment)["status"])
    clock.advance(1)
    deployment_ready = after.get_deployment(deployment)["status"]
    clock.advance(5)

    assert still == ("Creating", "Creating")
    assert deployment_ready == "Active"
    assert after.get_provisioned(pt)["status"] == "InService"
    assert provision(after, "model-nova00000001", name="again", clientRequestToken="pt-tok") == pt


def test_a_reset_forgets_every_throughput_and_deployment_on_disk_too(tmp_path, clock, models, faults):
    before = make_hosting(tmp_path, clock, models, faults)
    provision(before, "model-nova00000001")
    deploy(before, models.get("nova00000002").model_arn)

    before.clear()
    after = make_hosting(tmp_path, clock, models, faults)

    assert after.counts() == {"provisionedThroughputs": {}, "customModelDeployments": {}}


# --- the catalogue -------------------------------------------------------------------------------------
@pytest.mark.parametrize("identifier, model_id", [
    ("amazon.nova-lite-v1:0:24k", "amazon.nova-lite-v1:0"),
    ("amazon.titan-text-express-v1:0:8k", "amazon.titan-text-express-v1"),
    ("cohere.command-text-v14:7:4k", "cohere.command-text-v14"),
    ("arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-1-8b-instruct-v1:0:128k", "meta.llama3-1-8b-instruct-v1:0"),
    ("amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
])
def test_provisioned_throughput_names_a_base_model_by_its_contextual_variant(identifier, model_id):
    assert catalogue.resolve_provisionable(identifier).model_id == model_id


def test_only_listed_models_are_legacy_and_only_nova_customs_deploy_on_demand():
    assert {m.model_id for m in catalogue.MODELS if m.lifecycle == "LEGACY"} == set(catalogue.LEGACY)
    assert {m.family for m in catalogue.MODELS if m.custom_deployable} == {"nova"}
    assert all(m.provisionable for m in catalogue.MODELS if m.customizations)


def test_created_counts_each_new_hosting_once_and_not_a_repeated_token(hosting, models):
    deploy(hosting, models.get("nova00000001").model_arn, clientRequestToken="tok-1")
    deploy(hosting, models.get("nova00000001").model_arn, clientRequestToken="tok-1")
    provision(hosting, "amazon.titan-text-lite-v1", clientRequestToken="pt-1")
    provision(hosting, "amazon.titan-text-lite-v1", clientRequestToken="pt-1")

    assert hosting.created() == {"provisionedThroughputs": 1, "customModelDeployments": 1}
