"""The run spec: what a run does with its rows. Profiles define it once; a sidecar file, an event
or the CLI may override fields. Every source is validated against the same pydantic model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.domain.bodies import InferenceParams, family_of
from shared.domain.deadlines import parse_deadline
from shared.domain.evolving import STRICT, Evolving
from shared.domain.output_schema import check_schema
from shared.errors import InvalidRunSpec

OutputFormat = Literal["csv", "jsonl", "parquet"]


class RunSpec(Evolving):
    """A complete, validated spec. Unknown fields are refused where a person wrote it (resolve_spec
    validates with STRICT) and kept where a newer worker did (messages, run items)."""

    model_config = ConfigDict(frozen=True)

    model_id: str = Field(min_length=1)
    # A jinja2 template over the row's columns; None means the input has a `modelInput` column.
    template: str | None = None
    system: str | None = None
    params: InferenceParams = Field(default_factory=InferenceParams)
    invocation: Literal["InvokeModel", "Converse"] = "InvokeModel"
    output_format: OutputFormat = "jsonl"
    recipients: list[str] = Field(default_factory=list)
    name: str | None = Field(None, max_length=100)
    # The response cache (shared/adapters/response_cache.py): reuse answers already paid for and
    # store new ones, refresh (store only), or off. Not given: reuse at temperature 0 (the same
    # request gets the same answer), else off (_default_cache).
    cache: Literal["reuse", "refresh", "off"] = "off"
    # Read, render and count, print the estimate, create no job (shared/domain/estimate.py).
    dry_run: bool = False
    # An estimate over this fails the run before any job is created.
    budget_usd: float | None = Field(None, gt=0)
    # A time (ISO 8601 with its zone) or a duration from the run's start ("90m", "2h", "1h30m"):
    # at the batch cutoff, what a job has not answered goes on demand (shared/domain/deadlines.py).
    deadline: str | None = None
    # A job with records pending whose processed count has not moved for this long is stuck
    # (default QUARRY_STUCK_AFTER_S): stopped and finished on demand with a deadline, else reported.
    stuck_after_s: int | None = Field(None, ge=1)
    # A JSON Schema every output must match, and where the JSON is in the text
    # (shared/domain/output_schema.py).
    output_schema: dict[str, Any] | None = None
    extract: Literal["whole", "first_object"] = "first_object"
    # The foundation model a custom, provisioned or deployed model is built on (its ARN does not
    # say): its family picks the body format. Found from Bedrock by whoever starts the run.
    base_model_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_cache(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("cache") is None:
            params = data.get("params") or {}
            temperature = params.get("temperature") if isinstance(params, dict) else getattr(params, "temperature", None)
            data = {**data, "cache": "reuse" if temperature == 0 else "off"}
        return data

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, deadline: str | None) -> str | None:
        if deadline is not None:
            parse_deadline(deadline)  # BadDeadline (a ValueError) says what is wrong
        return deadline

    @field_validator("output_schema")
    @classmethod
    def _schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            check_schema(schema)
        return schema

    @field_validator("model_id")
    @classmethod
    def _known_family(cls, model_id: str) -> str:
        if not is_custom_arn(model_id):
            family_of(model_id)  # raises with the supported families listed
        return model_id

    @model_validator(mode="after")
    def _known_base_family(self) -> "RunSpec":
        if self.base_model_id is not None:
            family_of(self.base_model_id)
        elif is_custom_arn(self.model_id):
            raise ValueError(f"model_id {self.model_id!r} is a custom, provisioned or deployed model: give "
                             "base_model_id, the foundation model it is built on, so Quarry knows its body format")
        return self

    @property
    def family_model(self) -> str:
        """The model id whose family the bodies follow."""
        return self.base_model_id or self.model_id

    @field_validator("recipients")
    @classmethod
    def _emails(cls, recipients: list[str]) -> list[str]:
        bad = [r for r in recipients if "@" not in r or " " in r.strip()]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return recipients


def is_custom_arn(model_id: str) -> bool:
    """A custom model, provisioned throughput or custom model deployment ARN (no family in its name)."""
    return model_id.startswith("arn:") and any(
        f":{kind}/" in model_id for kind in ("custom-model", "provisioned-model", "custom-model-deployment"))


def batch_capable(model_id: str) -> bool:
    """Whether Bedrock runs batch jobs for the model: not for provisioned models or custom model
    deployments ("Batch inference isn't supported for provisioned models"): those go on demand."""
    return ":provisioned-model/" not in model_id and ":custom-model-deployment/" not in model_id


class SpecOverrides(BaseModel):
    """Any subset of RunSpec's fields, as a sidecar, an event or CLI flags give them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_id: str | None = None
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] | None = None
    invocation: Literal["InvokeModel", "Converse"] | None = None
    output_format: OutputFormat | None = None
    recipients: list[str] | None = None
    name: str | None = None
    cache: Literal["reuse", "refresh", "off"] | None = None
    dry_run: bool | None = None
    budget_usd: float | None = None
    deadline: str | None = None
    stuck_after_s: int | None = None
    output_schema: dict[str, Any] | None = None
    extract: Literal["whole", "first_object"] | None = None


def resolve_spec(profile: dict[str, Any] | None, *overrides: SpecOverrides, where: str) -> RunSpec:
    """The profile with each override applied in turn, validated; InvalidRunSpec says what and where."""
    merged: dict[str, Any] = dict(profile or {})
    for override in overrides:
        for key, value in override.model_dump(exclude_none=True).items():
            merged[key] = {**merged.get("params", {}), **value} if key == "params" else value
    try:
        return RunSpec.model_validate(merged, context=STRICT)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise InvalidRunSpec(f"invalid run spec from {where}: {problems}") from None


class Profiles:
    """Named specs from the profiles file (YAML): `profiles: {name: {model_id: ..., ...}}`."""

    def __init__(self, profiles: dict[str, dict[str, Any]], *, source: str) -> None:
        self._profiles = profiles
        self._source = source
        for name, profile in profiles.items():
            resolve_spec(profile, where=f"profile {name!r} in {source}")

    @classmethod
    def load(cls, path: Path) -> "Profiles":
        if not path.exists():
            return cls({}, source=str(path))
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidRunSpec(f"{path} is not valid YAML: {exc}") from None
        profiles = data.get("profiles", {}) if isinstance(data, dict) else None
        if not isinstance(profiles, dict):
            raise InvalidRunSpec(f"{path} must hold a mapping `profiles: {{name: spec}}`")
        return cls(profiles, source=str(path))

    def get(self, name: str) -> dict[str, Any]:
        try:
            return self._profiles[name]
        except KeyError:
            known = ", ".join(sorted(self._profiles)) or "none"
            raise InvalidRunSpec(f"unknown profile {name!r}; profiles in {self._source}: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._profiles)
