"""Quarry's settings: one pydantic model, read from QUARRY_* environment variables.

Resource names default to the local stack's; on AWS the template sets them on every worker.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a worker or the CLI reads at start-up."""

    model_config = SettingsConfigDict(env_prefix="QUARRY_", frozen=True)

    region: str = "us-east-1"
    inputs_bucket: str = "quarry-inputs"
    work_bucket: str = "quarry-work"
    results_bucket: str = "quarry-results"
    table: str = "quarry-state"
    bus: str = "quarry-bus"
    topic_name: str = "quarry-notifications"
    # Set on AWS (the template wires it), so workers need no sns:CreateTopic; unset, the ARN is
    # looked up by name with the idempotent CreateTopic, as the local stack does.
    topic_arn: str | None = None
    queue_prefix: str = "quarry-"
    bedrock_role_arn: str = "arn:aws:iam::123456789012:role/quarry-bedrock-batch"
    profiles_path: Path = Path("profiles.yaml")
    # Bedrock's per-model quotas; accounts can raise them, so they are settings.
    min_records_per_job: int = Field(100, ge=1)
    max_records_per_job: int = Field(50_000, ge=1)
    max_bytes_per_file: int = Field(1_000_000_000, ge=1)
    max_record_bytes: int = Field(1_000_000, ge=1)
    # Submitted + in-progress jobs per model, shared by every run: {"model-id or *": limit}.
    model_concurrency: dict[str, int] = Field(default_factory=lambda: {"*": 20})
    job_timeout_hours: int = Field(24, ge=24, le=168)
    # How often poll re-checks an active job; events are the fast path, this is the safety net.
    poll_interval_s: int = Field(60, ge=1, le=900)
    # Failed or missing records are retried once; fewer than this many go on demand instead.
    on_demand_concurrency: int = Field(4, ge=1)
    worker_concurrency: int = Field(4, ge=1)
    visibility_timeout_s: int = Field(120, ge=10)
    log_level: str = "INFO"
    workdir: Path = Path("/tmp/quarry")

    def queue_name(self, worker: str) -> str:
        return f"{self.queue_prefix}{worker}"

    def concurrency_for(self, model_id: str) -> int:
        return self.model_concurrency.get(model_id, self.model_concurrency.get("*", 20))
