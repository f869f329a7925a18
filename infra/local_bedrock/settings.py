"""Settings of the local Bedrock service, read from LOCAL_BEDROCK_* environment variables.

Quotas default to Bedrock's own defaults (../shared/BEDROCK.md); delays default to a pace that
looks real in a demo. Tests shrink both.
"""
from __future__ import annotations

import fnmatch
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineName = Literal["fast", "real"]


class Limits(BaseSettings):
    """Bedrock's batch quotas, per model; every one configurable as accounts can raise them."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_BEDROCK_", frozen=True)

    min_records_per_job: int = Field(100, ge=1)
    max_records_per_job: int = Field(50_000, ge=1)
    max_records_per_file: int = Field(50_000, ge=1)
    max_file_bytes: int = Field(1024**3, ge=1)
    max_job_bytes: int = Field(5 * 1024**3, ge=1)
    max_active_jobs_per_model: int = Field(20, ge=1)
    # Model units across no-commitment Provisioned Throughputs in the account (Service Quotas:
    # "Model units no-commitment Provisioned Throughputs across custom models", default 2).
    max_no_commitment_model_units: int = Field(2, ge=0)


class Delays(BaseSettings):
    """Seconds spent in each early status, and how a job's hours map to wall-clock seconds."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_BEDROCK_DELAY_", frozen=True)

    submitted: float = Field(1.0, ge=0)
    validating: float = Field(1.0, ge=0)
    scheduled: float = Field(1.0, ge=0)
    # Extra seconds per record while InProgress, so progress is visible even on the fast engine.
    per_record: float = Field(0.0, ge=0)
    # timeoutDurationInHours is 24..168; tests set this small to see Expired/PartiallyCompleted.
    seconds_per_hour: float = Field(3600.0, gt=0)
    # A provisioned throughput's Creating and Updating (minutes on AWS), and a custom model
    # deployment's Creating.
    provisioning: float = Field(5.0, ge=0)
    deployment: float = Field(5.0, ge=0)


class Customization(BaseSettings):
    """Model customization: Bedrock's data quotas per job, and the fast trainer's pace.

    Record limits default to Bedrock's defaults for text models (../shared/BEDROCK.md); the
    minimum is Quarry's own (Bedrock documents none for every family). Token limits are per family,
    prompt and completion together, counted with the fast engine's estimate (words and marks).
    """

    model_config = SettingsConfigDict(env_prefix="LOCAL_BEDROCK_CUSTOMIZATION_", frozen=True)

    min_training_records: int = Field(8, ge=1)
    # Bedrock counts training and validation records together against these.
    max_fine_tuning_records: int = Field(10_000, ge=1)
    max_pre_training_records: int = Field(100_000, ge=1)
    max_validation_records: int = Field(1_000, ge=1)
    # Titan text 4,096 in+out; Cohere 4,096 in + 2,048 out; Llama 3.x 16,000; Nova's 32k context.
    max_record_tokens: dict[str, int] = Field(default_factory=lambda: {
        "titan-text": 4_096, "cohere": 6_144, "llama": 16_000, "nova": 32_000})
    # The fast trainer's clock: seconds per training step, and per sub-status before training.
    seconds_per_step: float = Field(0.05, ge=0)
    validation_seconds: float = Field(1.0, ge=0)
    data_processing_seconds: float = Field(1.0, ge=0)
    # The metrics CSVs are rewritten whole every this many steps (and at the end).
    metrics_every_steps: int = Field(10, ge=1)


class Settings(BaseSettings):
    """Everything the service reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="LOCAL_BEDROCK_", frozen=True)

    # Containers reach each other over a bridge network, not loopback: docker-compose opts in here
    # and publishes the port on the host's loopback only.
    allow_container_network: bool = False
    host: str = "127.0.0.1"
    port: int = Field(4599, ge=0, le=65535)
    region: str = "us-east-1"
    account_id: str = Field("123456789012", pattern=r"^[0-9]{12}$")
    # Default engine for every model id, and per-model overrides as {"glob": "engine"}:
    # LOCAL_BEDROCK_ENGINE=real LOCAL_BEDROCK_ENGINE_MAP='{"amazon.titan-embed-*": "fast"}'
    engine: EngineName = "fast"
    engine_map: dict[str, EngineName] = Field(default_factory=dict)
    # Records handed to an engine at once; the real engine batches them on the model.
    batch_size: int = Field(16, ge=1, le=1024)
    # Jobs that run at once; the rest wait in Scheduled, as on a busy Bedrock.
    running_jobs: int = Field(2, ge=1)
    # Output lines are shuffled within windows of this size, because Bedrock's output order is
    # not the input order and consumers must join on recordId.
    shuffle_window: int = Field(1000, ge=1)
    # The real engine's repetition penalty: SmolLM2-135M loops on long inputs without one.
    real_repetition_penalty: float = Field(1.0, ge=1.0, le=2.0)
    event_bus: str = "default"
    # Where jobs, custom models, provisioned throughputs and model weights are kept across
    # restarts. Relative paths are taken from the working directory; tests give each server its own.
    home: Path = Path(".local/bedrock")
    limits: Limits = Field(default_factory=Limits)
    delays: Delays = Field(default_factory=Delays)
    customization: Customization = Field(default_factory=Customization)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str, info) -> str:
        # The service has no authentication: it must never be reachable from another machine.
        if host == "localhost" or info.data.get("allow_container_network"):
            return host
        try:
            if ipaddress.ip_address(host).is_loopback:
                return host
        except ValueError:
            pass
        raise ValueError(f"host {host!r} is not a loopback address; the local Bedrock listens on loopback only")

    def engine_for(self, model_id: str) -> EngineName:
        """The engine configured for a model id: the first matching glob, else the default."""
        for pattern, engine in self.engine_map.items():
            if fnmatch.fnmatchcase(model_id, pattern):
                return engine
        return self.engine
