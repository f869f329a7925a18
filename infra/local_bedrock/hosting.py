"""Where custom models run: provisioned throughputs and custom model deployments.

A provisioned throughput (PT) reserves model units for a foundation model or a custom model:
Creating -> InService (or Failed), and Updating -> InService when its model changes. A custom model
deployment serves a custom model on demand, for the families AWS offers that for: Creating ->
Active. Both are invoked through the runtime with their ARN as the modelId.

Statuses advance on a clock, not on a task: each resource keeps the moment its current transition
ends (`ready_at`, wall-clock) and settles when it is next read. So a restart of the service
resumes a countdown where it was, and nothing runs in the background. AWS sends no EventBridge
events for either resource, so neither does this service.
"""
from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from infra.local_bedrock import catalogue
from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.custom_models import CustomModel, CustomModelStore
from infra.local_bedrock.errors import BedrockError, conflict, not_found, quota_exceeded, throttled, validation
from infra.local_bedrock.faults import FaultRegistry, HostingFaults, for_new_hosting, take_provisioning_throttle
from infra.local_bedrock.pagination import aware, page
from infra.local_bedrock.persistence import StateDir
from infra.local_bedrock.settings import Settings

PT_STATE = "provisioned_throughputs"
DEPLOYMENT_STATE = "custom_model_deployments"

# A commitment runs for calendar months on AWS; 30 and 180 days are close enough to plan with.
COMMITMENT_DAYS = {"OneMonth": 30, "SixMonths": 180}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class ServingTarget:
    """What a runtime modelId resolves to: the family its bodies are read in, and the custom
    weights that answer (None: the base model itself)."""

    model: FoundationModel
    custom: CustomModel | None


# --- provisioned throughput ---------------------------------------------------------------------------
@dataclass
class ProvisionedThroughput:
    """One provisioned model throughput, as GetProvisionedModelThroughput describes it."""

    pt_id: str
    arn: str
    name: str
    base_model_id: str
    model_arn: str  # what it serves now: a foundation model (contextual variant) or a custom model
    desired_model_arn: str  # what it will serve once Updating ends
    custom_model_id: str | None
    desired_custom_model_id: str | None
    model_units: int
    commitment_duration: str | None
    client_request_token: str | None
    tags: list[dict[str, str]]
    faults: HostingFaults
    creation_time: dt.datetime
    last_modified_time: dt.datetime
    ready_at: dt.datetime | None
    status: str = "Creating"
    failure_message: str | None = None

    @property
    def commitment_expiration_time(self) -> dt.datetime | None:
        if self.commitment_duration is None:
            return None
        return self.creation_time + dt.timedelta(days=COMMITMENT_DAYS[self.commitment_duration])

    def settle(self, now: dt.datetime) -> bool:
        """End a Creating or Updating whose time is up; whether anything changed."""
        if self.status not in ("Creating", "Updating") or self.ready_at is None or now < self.ready_at:
            return False
        if self.status == "Creating" and self.faults.outcome == "Failed":
            self.status = "Failed"
            self.failure_message = self.faults.failure_message or (
                "Provisioned Throughput creation failed because of an internal error. (injected fault)")
        else:
            self.status = "InService"
            self.model_arn, self.custom_model_id = self.desired_model_arn, self.desired_custom_model_id
        # The change happened when its time was up, not when someone next looked.
        self.last_modified_time, self.ready_at = self.ready_at, None
        return True

    def summary(self, region: str) -> dict[str, Any]:
        """The ListProvisionedModelThroughputs summary: the description without failureMessage."""
        summary = self.describe(region)
        summary.pop("failureMessage", None)
        return summary

    def describe(self, region: str) -> dict[str, Any]:
        """The GetProvisionedModelThroughput response."""
        described: dict[str, Any] = {
            "provisionedModelName": self.name,
            "provisionedModelArn": self.arn,
            "modelArn": self.model_arn,
            "desiredModelArn": self.desired_model_arn,
            "foundationModelArn": catalogue.resolve(self.base_model_id).arn(region),
            "modelUnits": self.model_units,
            "desiredModelUnits": self.model_units,
            "status": self.status,
            "creationTime": self.creation_time,
            "lastModifiedTime": self.last_modified_time,
        }
        optional = {
            "failureMessage": self.failure_message,
            "commitmentDuration": self.commitment_duration,
            "commitmentExpirationTime": self.commitment_expiration_time,
        }
        described.update({key: value for key, value in optional.items() if value is not None})
        return described

    def to_record(self) -> dict[str, Any]:
        record = {key: value for key, value in self.__dict__.items() if key != "faults"}
        record["faults"] = self.faults.model_dump()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "ProvisionedThroughput":
        fields = dict(record)
        fields["faults"] = HostingFaults(**fields["faults"])
        for key in ("creation_time", "last_modified_time", "ready_at"):
            fields[key] = _moment(fields[key])
        return cls(**fields)


# --- custom model deployments -------------------------------------------------------------------------
@dataclass
class Deployment:
    """One custom model deployment, as GetCustomModelDeployment describes it."""

    deployment_id: str
    arn: str
    name: str
    model_arn: str
    custom_model_id: str
    description: str | None
    client_request_token: str | None
    tags: list[dict[str, str]]
    faults: HostingFaults
    created_at: dt.datetime
    ready_at: dt.datetime | None
    status: str = "Creating"
    last_updated_at: dt.datetime | None = None
    failure_message: str | None = None

    def settle(self, now: dt.datetime) -> bool:
        if self.status != "Creating" or self.ready_at is None or now < self.ready_at:
            return False
        if self.faults.outcome == "Failed":
            self.status = "Failed"
            self.failure_message = self.faults.failure_message or (
                "Custom model deployment failed because of an internal error. (injected fault)")
        else:
            self.status = "Active"
        self.last_updated_at, self.ready_at = self.ready_at, None
        return True

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "customModelDeploymentArn": self.arn,
            "modelDeploymentName": self.name,
            "modelArn": self.model_arn,
            "createdAt": self.created_at,
            "status": self.status,
        }
        optional = {"description": self.description, "failureMessage": self.failure_message,
                    "lastUpdatedAt": self.last_updated_at}
        described.update({key: value for key, value in optional.items() if value is not None})
        return described

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "customModelDeploymentArn": self.arn,
            "customModelDeploymentName": self.name,
            "modelArn": self.model_arn,
            "createdAt": self.created_at,
            "status": self.status,
        }
        optional = {"failureMessage": self.failure_message, "lastUpdatedAt": self.last_updated_at}
        summary.update({key: value for key, value in optional.items() if value is not None})
        return summary

    def to_record(self) -> dict[str, Any]:
        record = {key: value for key, value in self.__dict__.items() if key != "faults"}
        record["faults"] = self.faults.model_dump()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Deployment":
        fields = dict(record)
        fields["faults"] = HostingFaults(**fields["faults"])
        for key in ("created_at", "ready_at", "last_updated_at"):
            fields[key] = _moment(fields[key])
        return cls(**fields)


# --- the rules ----------------------------------------------------------------------------------------
class Hosting:
    """Every PT and deployment of the service, the rules Bedrock applies to them, and how the
    runtime finds the model behind a PT or deployment ARN. Saved whole on every change."""

    def __init__(self, settings: Settings, *, custom_models: CustomModelStore, faults: FaultRegistry,
                 state: StateDir, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._settings = settings
        self._region = settings.region
        self._account = settings.account_id
        self._custom_models = custom_models
        self._faults = faults
        self._state = state
        self._clock = clock
        self._pts: dict[str, ProvisionedThroughput] = {}
        self._deployments: dict[str, Deployment] = {}
        # Creates that made a new PT or deployment (not the answers a repeated token gets), since
        # this process started: a test counts them to prove a crash never made a second one.
        self._created = {"provisionedThroughputs": 0, "customModelDeployments": 0}
        for record in state.load(PT_STATE):
            pt = ProvisionedThroughput.from_record(record)
            self._pts[pt.pt_id] = pt
        for record in state.load(DEPLOYMENT_STATE):
            deployment = Deployment.from_record(record)
            self._deployments[deployment.deployment_id] = deployment

    # --- provisioned throughput -------------------------------------------------------------------
    def create_provisioned(self, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        token, name = params.get("clientRequestToken"), params["provisionedModelName"]
        existing = next((pt for pt in self._pts.values() if token and pt.client_request_token == token), None)
        if existing is not None:
            # Idempotency: the same token answers with the PT it first created.
            return {"provisionedModelArn": existing.arn}
        base, custom, model_arn = self._provisionable(params["modelId"])
        model_ids = _fault_ids(params["modelId"], base, custom)
        if take_provisioning_throttle(self._faults, model_ids=model_ids, name=name):
            raise throttled("Too many requests, please wait before trying again. (injected fault)")
        if any(pt.name == name for pt in self._pts.values()):
            raise validation(f"A provisioned model throughput with the name {name} already exists.")
        commitment, units = params.get("commitmentDuration"), params["modelUnits"]
        if commitment is None:
            self._check_no_commitment(base, custom, units)
        faults = for_new_hosting(self._faults, model_ids=model_ids, name=name)
        now = self._clock()
        pt_id = _new_id()
        custom_id = custom.model_id if custom else None
        pt = ProvisionedThroughput(
            pt_id=pt_id, arn=f"arn:aws:bedrock:{self._region}:{self._account}:provisioned-model/{pt_id}",
            name=name, base_model_id=base.model_id, model_arn=model_arn, desired_model_arn=model_arn,
            custom_model_id=custom_id, desired_custom_model_id=custom_id, model_units=units,
            commitment_duration=commitment, client_request_token=token, tags=params.get("tags", []),
            faults=faults, creation_time=now, last_modified_time=now,
            ready_at=now + dt.timedelta(seconds=self._delay(faults, self._settings.delays.provisioning)),
        )
        self._pts[pt_id] = pt
        self._created["provisionedThroughputs"] += 1
        self._save_pts()
        return {"provisionedModelArn": pt.arn}

    def get_provisioned(self, identifier: str) -> dict[str, Any]:
        self._settle()
        return self._pt(identifier).describe(self._region)

    def list_provisioned(self, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        pts = [pt for pt in self._pts.values() if _pt_matches(pt, params)]
        chosen, token = _page(pts, params, key=lambda pt: (pt.creation_time, pt.pt_id))
        body: dict[str, Any] = {"provisionedModelSummaries": [pt.summary(self._region) for pt in chosen]}
        return body | ({"nextToken": token} if token else {})

    def update_provisioned(self, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        pt = self._pt(params["provisionedModelId"])
        new_name, new_model = params.get("desiredProvisionedModelName"), params.get("desiredModelId")
        if new_model is not None and pt.status != "InService":
            raise validation(f"The provisioned model {pt.arn} is {pt.status}; its model can be changed only while it is InService.")
        if new_name is not None and new_name != pt.name:
            if any(other.name == new_name for other in self._pts.values()):
                raise validation(f"A provisioned model throughput with the name {new_name} already exists.")
            pt.name = new_name
            pt.last_modified_time = self._clock()
        if new_model is not None:
            custom, model_arn = self._replacement_model(pt, new_model)
            if model_arn != pt.model_arn:
                now = self._clock()
                pt.desired_model_arn, pt.desired_custom_model_id = model_arn, custom.model_id if custom else None
                pt.status, pt.last_modified_time = "Updating", now
                pt.ready_at = now + dt.timedelta(seconds=self._delay(pt.faults, self._settings.delays.provisioning))
        self._save_pts()
        return {}

    def delete_provisioned(self, identifier: str) -> dict[str, Any]:
        self._settle()
        pt = self._pt(identifier)
        expires = pt.commitment_expiration_time
        if expires is not None and self._clock() < expires:
            raise validation(f"The provisioned model {pt.arn} has a {pt.commitment_duration} commitment that ends at "
                             f"{expires.isoformat()}; it can't be deleted before its commitment term is over.")
        del self._pts[pt.pt_id]
        self._save_pts()
        return {}

    # --- custom model deployments -----------------------------------------------------------------
    def create_deployment(self, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        token, name = params.get("clientRequestToken"), params["modelDeploymentName"]
        existing = next((d for d in self._deployments.values() if token and d.client_request_token == token), None)
        if existing is not None:
            return {"customModelDeploymentArn": existing.arn}
        custom = self._custom_models.get(params["modelArn"])
        model_ids = _fault_ids(params["modelArn"], custom.base_model, custom)
        if take_provisioning_throttle(self._faults, model_ids=model_ids, name=name):
            raise throttled("Too many requests, please wait before trying again. (injected fault)")
        _require_active(custom)
        if not custom.base_model.custom_deployable:
            supported = ", ".join(m.name for m in catalogue.MODELS if m.custom_deployable)
            raise validation(f"On-demand deployment isn't supported for custom models of {custom.base_model.model_id}. "
                             f"Supported base models: {supported}. Purchase Provisioned Throughput to use this model.")
        if any(d.name == name for d in self._deployments.values()):
            raise validation(f"A custom model deployment with the name {name} already exists.")
        faults = for_new_hosting(self._faults, model_ids=model_ids, name=name)
        now = self._clock()
        deployment_id = _new_id()
        deployment = Deployment(
            deployment_id=deployment_id,
            arn=f"arn:aws:bedrock:{self._region}:{self._account}:custom-model-deployment/{deployment_id}",
            name=name, model_arn=custom.model_arn, custom_model_id=custom.model_id,
            description=params.get("description"), client_request_token=token, tags=params.get("tags", []),
            faults=faults, created_at=now,
            ready_at=now + dt.timedelta(seconds=self._delay(faults, self._settings.delays.deployment)),
        )
        self._deployments[deployment_id] = deployment
        self._created["customModelDeployments"] += 1
        self._save_deployments()
        return {"customModelDeploymentArn": deployment.arn}

    def get_deployment(self, identifier: str) -> dict[str, Any]:
        self._settle()
        return self._deployment(identifier).describe()

    def list_deployments(self, params: dict[str, Any]) -> dict[str, Any]:
        self._settle()
        deployments = [d for d in self._deployments.values() if _deployment_matches(d, params)]
        chosen, token = _page(deployments, params, key=lambda d: (d.created_at, d.deployment_id))
        body: dict[str, Any] = {"modelDeploymentSummaries": [d.summary() for d in chosen]}
        return body | ({"nextToken": token} if token else {})

    def delete_deployment(self, identifier: str) -> dict[str, Any]:
        self._settle()
        deployment = self._deployment(identifier)
        del self._deployments[deployment.deployment_id]
        self._save_deployments()
        return {}

    # --- what other operations ask of hosting -----------------------------------------------------
    def serving_target(self, model_id: str) -> ServingTarget | None:
        """The model behind a PT or deployment ARN, ready to answer; None for any other modelId.

        A PT that is Creating or a deployment still Creating is not ready (ModelNotReadyException,
        which the SDKs retry); a Failed one never will be (ValidationException). A custom model's own
        ARN is refused: it runs only through a PT or a deployment."""
        self._settle()
        resource = model_id.rsplit(":", 1)[-1]
        kind, _, _ = resource.partition("/")
        if kind == "provisioned-model":
            pt = self._pts.get(resource.rsplit("/", 1)[-1])
            if pt is None:
                raise not_found(f"The provisioned model {model_id} was not found.")
            return self._serve_pt(pt)
        if kind == "custom-model-deployment":
            deployment = self._deployments.get(resource.rsplit("/", 1)[-1])
            if deployment is None:
                raise not_found(f"The custom model deployment {model_id} was not found.")
            return self._serve_deployment(deployment)
        if ":custom-model/" in model_id or self._custom_models.find(model_id) is not None:
            raise validation("The provided model doesn't support on-demand throughput. Purchase Provisioned "
                             "Throughput for the custom model, or deploy it for on-demand inference, and invoke "
                             "that ARN instead.")
        return None

    def is_provisioned_model(self, identifier: str) -> bool:
        """Whether a modelId names a PT (by ARN, id or name), which batch inference refuses."""
        return self._find_pt(identifier) is not None

    def ensure_custom_model_unused(self, custom: CustomModel) -> None:
        """Refuse to delete a custom model that a PT or a deployment still serves (or will)."""
        self._settle()
        users = [pt.arn for pt in self._pts.values() if custom.model_id in (pt.custom_model_id, pt.desired_custom_model_id)]
        users += [d.arn for d in self._deployments.values() if d.custom_model_id == custom.model_id]
        if users:
            raise conflict(f"The custom model {custom.model_arn} is in use by {', '.join(users)}. Delete the "
                           "Provisioned Throughput or custom model deployment before deleting the model.")

    def prices(self) -> dict[str, Any]:
        """The hourly price per model unit of every provisionable model, and what the PTs that
        exist now cost per hour, so a caller can account for them."""
        self._settle()
        models = [
            {"modelId": m.model_id, "noCommitment": p.no_commitment, "oneMonth": p.one_month,
             "sixMonths": p.six_months, "noCommitmentForBaseModel": p.no_commitment_for_base, "source": p.source}
            for m in catalogue.MODELS if (p := m.provisioned_price) is not None
        ]
        pts = [
            {"provisionedModelArn": pt.arn, "provisionedModelName": pt.name, "status": pt.status,
             "modelUnits": pt.model_units, "commitmentDuration": pt.commitment_duration,
             "hourlyPrice": round(self._hourly(pt), 2)}
            for pt in self._pts.values()
        ]
        return {"currency": "USD", "unit": "model unit per hour", "models": models, "provisionedThroughputs": pts,
                "totalHourly": round(sum(item["hourlyPrice"] for item in pts), 2)}

    def counts(self) -> dict[str, dict[str, int]]:
        """PTs and deployments by status, for the health endpoint."""
        self._settle()
        return {"provisionedThroughputs": _count(pt.status for pt in self._pts.values()),
                "customModelDeployments": _count(d.status for d in self._deployments.values())}

    def created(self) -> dict[str, int]:
        """How many PTs and deployments were created (not replayed by token) since this process started."""
        return dict(self._created)

    def clear(self) -> None:
        self._pts.clear()
        self._deployments.clear()
        self._save_pts()
        self._save_deployments()

    # --- internals --------------------------------------------------------------------------------
    def _settle(self) -> None:
        now = self._clock()
        if any([pt.settle(now) for pt in self._pts.values()]):
            self._save_pts()
        if any([d.settle(now) for d in self._deployments.values()]):
            self._save_deployments()

    def _provisionable(self, identifier: str) -> tuple[FoundationModel, CustomModel | None, str]:
        """The base model, the custom model (if any) and the modelArn a PT of `identifier` reports."""
        custom = self._custom_models.find(identifier)
        if custom is not None:
            _require_active(custom)
            return custom.base_model, custom, custom.model_arn
        if ":custom-model/" in identifier:
            raise not_found(f"The custom model {identifier} was not found.")
        try:
            base = catalogue.resolve_provisionable(identifier)
        except catalogue.UnknownModel:
            raise not_found(f"The model {identifier} was not found.") from None
        if not base.provisionable:
            raise validation(f"Provisioned Throughput isn't supported for the model {base.model_id}.")
        variant = identifier.rsplit("/", 1)[-1]
        return base, None, f"arn:aws:bedrock:{self._region}::foundation-model/{variant}"

    def _replacement_model(self, pt: ProvisionedThroughput, identifier: str) -> tuple[CustomModel | None, str]:
        """A PT of a custom model may switch to its base model or another custom model of that base."""
        if pt.custom_model_id is None:
            raise validation(f"The model of the provisioned model {pt.arn} can't be changed: only a Provisioned "
                             "Throughput of a custom model can change its model.")
        base, custom, model_arn = self._provisionable(identifier)
        if base.model_id != pt.base_model_id:
            raise validation(f"The model {identifier} isn't derived from {pt.base_model_id}, the base model of "
                             f"the provisioned model {pt.arn}. Choose that base model or a custom model of it.")
        return custom, model_arn

    def _check_no_commitment(self, base: FoundationModel, custom: CustomModel | None, units: int) -> None:
        price = base.provisioned_price
        if custom is None and price is not None and not price.no_commitment_for_base:
            raise validation(f"No-commitment Provisioned Throughput isn't supported for the base model {base.model_id}. "
                             "Choose a commitment term (OneMonth or SixMonths).")
        limit = self._settings.limits.max_no_commitment_model_units
        used = sum(pt.model_units for pt in self._pts.values() if pt.commitment_duration is None)
        if used + units > limit:
            raise quota_exceeded(
                f"This request would use {used + units} model units of no-commitment Provisioned Throughput; the "
                f"account's quota is {limit}. Delete a no-commitment Provisioned Throughput or request a quota increase."
            )

    def _serve_pt(self, pt: ProvisionedThroughput) -> ServingTarget:
        if pt.status == "Creating":
            raise BedrockError("ModelNotReadyException",
                               f"The provisioned model {pt.arn} is not ready yet (status Creating). Try again when it is InService.")
        if pt.status == "Failed":
            raise validation(f"The provisioned model {pt.arn} is Failed and can't serve requests: {pt.failure_message}")
        # Updating keeps serving the model it had until the update completes, as on AWS.
        base = catalogue.resolve(pt.base_model_id)
        if pt.custom_model_id is None:
            return ServingTarget(base, None)
        return ServingTarget(base, self._custom_models.get(pt.custom_model_id))

    def _serve_deployment(self, deployment: Deployment) -> ServingTarget:
        if deployment.status == "Creating":
            raise BedrockError("ModelNotReadyException",
                               f"The custom model deployment {deployment.arn} is not ready yet (status Creating). "
                               "Try again when it is Active.")
        if deployment.status == "Failed":
            raise validation(f"The custom model deployment {deployment.arn} is Failed and can't serve requests: "
                             f"{deployment.failure_message}")
        custom = self._custom_models.get(deployment.custom_model_id)
        return ServingTarget(custom.base_model, custom)

    def _find_pt(self, identifier: str) -> ProvisionedThroughput | None:
        key = identifier.rsplit("/", 1)[-1]
        return self._pts.get(key) or next((pt for pt in self._pts.values() if pt.name == identifier), None)

    def _pt(self, identifier: str) -> ProvisionedThroughput:
        pt = self._find_pt(identifier)
        if pt is None:
            raise not_found(f"The provisioned model {identifier} was not found.")
        return pt

    def _deployment(self, identifier: str) -> Deployment:
        key = identifier.rsplit("/", 1)[-1]
        found = self._deployments.get(key) or next(
            (d for d in self._deployments.values() if d.name == identifier), None)
        if found is None:
            raise not_found(f"The custom model deployment {identifier} was not found.")
        return found

    def _hourly(self, pt: ProvisionedThroughput) -> float:
        # A custom model's PT costs what its base model's does.
        price = catalogue.resolve(pt.base_model_id).provisioned_price
        return 0.0 if price is None else price.hourly(pt.commitment_duration) * pt.model_units

    @staticmethod
    def _delay(faults: HostingFaults, default: float) -> float:
        return default if faults.seconds is None else faults.seconds

    def _save_pts(self) -> None:
        self._state.save(PT_STATE, [pt.to_record() for pt in self._pts.values()])

    def _save_deployments(self) -> None:
        self._state.save(DEPLOYMENT_STATE, [d.to_record() for d in self._deployments.values()])


def _require_active(custom: CustomModel) -> None:
    if custom.status != "Active":
        raise validation(f"The custom model {custom.model_arn} is {custom.status}; only an Active custom model can be hosted.")


def _fault_ids(given: str, base: FoundationModel, custom: CustomModel | None) -> tuple[str, ...]:
    """Every id a fault's model_id may name this create by."""
    ids = (given, base.model_id)
    return ids + ((custom.model_arn, custom.model_id, custom.model_name) if custom else ())


def _pt_matches(pt: ProvisionedThroughput, params: dict[str, Any]) -> bool:
    if "statusEquals" in params and pt.status != params["statusEquals"]:
        return False
    if "nameContains" in params and params["nameContains"] not in pt.name:
        return False
    if "modelArnEquals" in params and params["modelArnEquals"] not in (pt.model_arn, pt.desired_model_arn):
        return False
    if "creationTimeAfter" in params and pt.creation_time <= aware(params["creationTimeAfter"]):
        return False
    if "creationTimeBefore" in params and pt.creation_time >= aware(params["creationTimeBefore"]):
        return False
    return True


def _deployment_matches(deployment: Deployment, params: dict[str, Any]) -> bool:
    if "statusEquals" in params and deployment.status != params["statusEquals"]:
        return False
    if "nameContains" in params and params["nameContains"] not in deployment.name:
        return False
    if "modelArnEquals" in params and params["modelArnEquals"] != deployment.model_arn:
        return False
    if "createdAfter" in params and deployment.created_at <= aware(params["createdAfter"]):
        return False
    if "createdBefore" in params and deployment.created_at >= aware(params["createdBefore"]):
        return False
    return True


T = TypeVar("T")


def _page(items: list[T], params: dict[str, Any], *, key: Callable[[T], Any]) -> tuple[list[T], str | None]:
    """One page of items sorted by creation time (newest first unless asked), and the next token."""
    return page(sorted(items, key=key, reverse=params.get("sortOrder", "Descending") == "Descending"), params)


def _count(statuses: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts


def _moment(value: str | dt.datetime | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))
