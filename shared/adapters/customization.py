"""Bedrock's model customization jobs and the hosting of custom models (provisioned throughput and
custom model deployments), behind one small port. Only a 404 means "missing"; every other error is
translated to the domain's (shared/adapters/aws.py)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.aws import translate

HostingKind = Literal["provisioned", "deployment"]


@dataclass(frozen=True)
class CustomizationState:
    arn: str
    status: str  # InProgress | Stopping | Completed | Failed | Stopped
    failure_message: str | None
    output_model_arn: str | None
    training_loss: float | None
    validation_loss: float | None
    output_uri: str | None = None


@dataclass(frozen=True)
class HostingState:
    kind: HostingKind
    arn: str
    name: str
    status: str  # provisioned: Creating | InService | Updating | Failed; deployment: Creating | Active | Failed
    failure_message: str | None = None
    model_arn: str | None = None
    created: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status in ("InService", "Active")


def _missing(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


class Customizations:
    """Create, read and stop customization jobs; create, read, list and delete hosting."""

    def __init__(self, bedrock: Any, *, role_arn: str) -> None:
        self._bedrock = bedrock
        self._role_arn = role_arn

    # --- customization jobs ----------------------------------------------------------------------
    async def create_job(self, *, name: str, token: str, base_model: str, kind: str, custom_model_name: str,
                         training_uri: str, validation_uri: str | None, output_uri: str,
                         hyperparameters: dict[str, str], run_id: str) -> str:
        """The job's ARN; the deterministic token makes a repeated create return the same job."""
        params: dict[str, Any] = dict(
            jobName=name, clientRequestToken=token, customModelName=custom_model_name, roleArn=self._role_arn,
            baseModelIdentifier=base_model, customizationType=kind, trainingDataConfig={"s3Uri": training_uri},
            outputDataConfig={"s3Uri": output_uri}, hyperParameters=hyperparameters,
            jobTags=[{"key": "quarry:run", "value": run_id}], customModelTags=[{"key": "quarry:run", "value": run_id}])
        if validation_uri:
            params["validationDataConfig"] = {"validators": [{"s3Uri": validation_uri}]}
        try:
            response = await self._bedrock.create_model_customization_job(**params)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"creating customization job {name}") from exc
        return response["jobArn"]

    async def get_job(self, arn: str) -> CustomizationState | None:
        """The job's state; None if Bedrock answers 404."""
        try:
            job = await self._bedrock.get_model_customization_job(jobIdentifier=arn)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return None
            raise translate(exc, f"reading customization job {arn}") from exc
        validation = job.get("validationMetrics") or []
        return CustomizationState(
            arn=arn, status=job["status"], failure_message=job.get("failureMessage"),
            output_model_arn=job.get("outputModelArn"),
            training_loss=(job.get("trainingMetrics") or {}).get("trainingLoss"),
            validation_loss=validation[-1].get("validationLoss") if validation else None,
            output_uri=(job.get("outputDataConfig") or {}).get("s3Uri"))

    async def stop_job(self, arn: str) -> None:
        try:
            await self._bedrock.stop_model_customization_job(jobIdentifier=arn)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc) or (isinstance(exc, ClientError) and exc.response["Error"]["Code"] in
                                 ("ConflictException", "ValidationException")):
                return  # gone, or already ending or ended: stopping is done
            raise translate(exc, f"stopping customization job {arn}") from exc

    async def lifecycle(self, model_id: str) -> str | None:
        """ACTIVE or LEGACY, as ListFoundationModels reports the model; None if it is not listed."""
        try:
            response = await self._bedrock.list_foundation_models()
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "listing Bedrock's foundation models") from exc
        for model in response.get("modelSummaries", []):
            if model["modelId"] == model_id:
                return (model.get("modelLifecycle") or {}).get("status", "ACTIVE")
        return None

    # --- hosting -----------------------------------------------------------------------------------
    async def create_hosting(self, kind: HostingKind, *, name: str, token: str, model_arn: str, units: int,
                             run_id: str) -> str:
        """The hosting's ARN; the deterministic token makes a repeated create return the same one."""
        tags = [{"key": "quarry:run", "value": run_id}]
        try:
            if kind == "provisioned":
                response = await self._bedrock.create_provisioned_model_throughput(
                    provisionedModelName=name, clientRequestToken=token, modelId=model_arn, modelUnits=units, tags=tags)
                return response["provisionedModelArn"]
            response = await self._bedrock.create_custom_model_deployment(
                modelDeploymentName=name, clientRequestToken=token, modelArn=model_arn, tags=tags)
            return response["customModelDeploymentArn"]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"creating hosting {name}") from exc

    async def get_hosting(self, kind: HostingKind, identifier: str) -> HostingState | None:
        """A hosting by ARN or name; None if Bedrock answers 404."""
        try:
            if kind == "provisioned":
                pt = await self._bedrock.get_provisioned_model_throughput(provisionedModelId=identifier)
                return HostingState(kind, pt["provisionedModelArn"], pt["provisionedModelName"], pt["status"],
                                    pt.get("failureMessage"), pt.get("modelArn"), pt.get("creationTime"),
                                    {"model_units": pt.get("modelUnits")})
            d = await self._bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=identifier)
            return HostingState(kind, d["customModelDeploymentArn"], d["modelDeploymentName"], d["status"],
                                d.get("failureMessage"), d.get("modelArn"), d.get("createdAt"))
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return None
            raise translate(exc, f"reading hosting {identifier}") from exc

    async def delete_hosting(self, kind: HostingKind, identifier: str) -> bool:
        """Delete it; False if Bedrock no longer knows it (a second delete is fine)."""
        try:
            if kind == "provisioned":
                await self._bedrock.delete_provisioned_model_throughput(provisionedModelId=identifier)
            else:
                await self._bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=identifier)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return False
            raise translate(exc, f"deleting hosting {identifier}") from exc
        return True

    async def list_hostings(self, name_prefix: str) -> list[HostingState]:
        """Every provisioned throughput and deployment whose name starts with `name_prefix`."""
        found: list[HostingState] = []
        try:
            kwargs: dict[str, Any] = {"maxResults": 1000, "nameContains": name_prefix}
            while True:
                page = await self._bedrock.list_provisioned_model_throughputs(**kwargs)
                found += [HostingState("provisioned", s["provisionedModelArn"], s["provisionedModelName"], s["status"],
                                       None, s.get("modelArn"), s.get("creationTime"),
                                       {"model_units": s.get("modelUnits")})
                          for s in page.get("provisionedModelSummaries", [])
                          if s["provisionedModelName"].startswith(name_prefix)]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
            kwargs = {"maxResults": 1000, "nameContains": name_prefix}
            while True:
                page = await self._bedrock.list_custom_model_deployments(**kwargs)
                found += [HostingState("deployment", s["customModelDeploymentArn"], s["customModelDeploymentName"],
                                       s["status"], s.get("failureMessage"), s.get("modelArn"), s.get("createdAt"))
                          for s in page.get("modelDeploymentSummaries", [])
                          if s["customModelDeploymentName"].startswith(name_prefix)]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "listing hosting") from exc
        return found
