"""Custom models: what a completed customization job produces, as GetCustomModel describes it.

A custom model keeps the base model it was trained from (so it answers in that family's shape),
the engine that trained it and the directory of its weights under the service's home, which a
provisioned throughput or a custom model deployment loads to serve it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local_bedrock import catalogue
from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.errors import conflict, not_found
from infra.local_bedrock.pagination import aware, page


@dataclass
class CustomModel:
    model_arn: str
    model_name: str
    job_arn: str
    job_name: str
    base_model: FoundationModel
    customization_type: str
    engine: str  # "fast" or "real": which trainer made the weights, so which engine serves them
    weights_dir: Path
    creation_time: dt.datetime
    hyper_parameters: dict[str, str]
    training_data_config: dict[str, Any]
    output_data_config: dict[str, Any]
    validation_data_config: dict[str, Any] | None = None
    training_metrics: dict[str, Any] | None = None
    validation_metrics: list[dict[str, Any]] | None = None
    model_kms_key_arn: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    status: str = "Active"
    failure_message: str | None = None

    @property
    def model_id(self) -> str:
        return self.model_arn.rsplit("/", 1)[-1]

    def describe(self, region: str) -> dict[str, Any]:
        """The GetCustomModel response."""
        described: dict[str, Any] = {
            "modelArn": self.model_arn,
            "modelName": self.model_name,
            "jobName": self.job_name,
            "jobArn": self.job_arn,
            "baseModelArn": self.base_model.arn(region),
            "customizationType": self.customization_type,
            "hyperParameters": self.hyper_parameters,
            "trainingDataConfig": self.training_data_config,
            "outputDataConfig": self.output_data_config,
            "creationTime": self.creation_time,
            "modelStatus": self.status,
        }
        optional = {
            "modelKmsKeyArn": self.model_kms_key_arn,
            "validationDataConfig": self.validation_data_config,
            "trainingMetrics": self.training_metrics,
            "validationMetrics": self.validation_metrics,
            "failureMessage": self.failure_message,
        }
        described.update({key: value for key, value in optional.items() if value is not None})
        return described

    def summary(self, region: str, account_id: str) -> dict[str, Any]:
        """The ListCustomModels summary."""
        return {
            "modelArn": self.model_arn,
            "modelName": self.model_name,
            "creationTime": self.creation_time,
            "baseModelArn": self.base_model.arn(region),
            # botocore's shape wants "provider.name" here (the model id without its version suffix).
            "baseModelName": self.base_model.model_id.split(":", 1)[0],
            "customizationType": self.customization_type,
            "ownerAccountId": account_id,
            "modelStatus": self.status,
        }

    def to_record(self) -> dict[str, Any]:
        record = {key: value for key, value in self.__dict__.items() if key not in ("base_model", "weights_dir")}
        record["base_model_id"] = self.base_model.model_id
        record["weights_dir"] = str(self.weights_dir)
        record["creation_time"] = self.creation_time.isoformat()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "CustomModel":
        fields = dict(record)
        fields["base_model"] = catalogue.resolve(fields.pop("base_model_id"))
        fields["weights_dir"] = Path(fields["weights_dir"])
        fields["creation_time"] = dt.datetime.fromisoformat(fields["creation_time"])
        return cls(**fields)


class CustomModelStore:
    """Every custom model of this service, by id; names are unique, as on Bedrock."""

    def __init__(self, *, region: str, account_id: str) -> None:
        self.region = region
        self.account_id = account_id
        self._models: dict[str, CustomModel] = {}

    def arn_for(self, model_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:custom-model/{model_id}"

    def name_taken(self, name: str) -> bool:
        return any(model.model_name == name for model in self._models.values())

    def add(self, model: CustomModel) -> None:
        if self.name_taken(model.model_name):
            raise conflict(f"A custom model with the name {model.model_name} already exists.")
        self._models[model.model_id] = model

    def get(self, identifier: str) -> CustomModel:
        """A custom model by ARN, id or name; ResourceNotFoundException otherwise."""
        found = self.find(identifier)
        if found is None:
            raise not_found(f"The custom model {identifier} was not found.")
        return found

    def find(self, identifier: str) -> CustomModel | None:
        model_id = identifier.rsplit("/", 1)[-1]
        if model_id in self._models:
            return self._models[model_id]
        return next((model for model in self._models.values() if model.model_name == identifier), None)

    def delete(self, identifier: str) -> CustomModel:
        model = self.get(identifier)
        del self._models[model.model_id]
        return model

    def all(self) -> list[CustomModel]:
        return list(self._models.values())

    def list(self, params: dict[str, Any]) -> tuple[list[CustomModel], str | None]:
        """One page of the models matching the ListCustomModels filters, and the next token."""
        models = [model for model in self._models.values() if _matches(model, params, self.region)]
        models.sort(key=lambda model: (model.creation_time, model.model_id),
                    reverse=params.get("sortOrder", "Descending") == "Descending")
        return page(models, params, default_size=100)

    def clear(self) -> None:
        self._models.clear()

    def to_records(self) -> list[dict[str, Any]]:
        return [model.to_record() for model in self._models.values()]

    def load_records(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            model = CustomModel.from_record(record)
            self._models[model.model_id] = model


def _matches(model: CustomModel, params: dict[str, Any], region: str) -> bool:
    # Every model here belongs to this account: asking for models shared with it finds none.
    if params.get("isOwned") is False:
        return False
    if "nameContains" in params and params["nameContains"] not in model.model_name:
        return False
    if "modelStatus" in params and model.status != params["modelStatus"]:
        return False
    for key in ("baseModelArnEquals", "foundationModelArnEquals"):
        if key in params and params[key] != model.base_model.arn(region):
            return False
    if "creationTimeAfter" in params and model.creation_time <= aware(params["creationTimeAfter"]):
        return False
    if "creationTimeBefore" in params and model.creation_time >= aware(params["creationTimeBefore"]):
        return False
    return True
