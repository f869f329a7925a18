"""Quarry's settings: one pydantic model, read from QUARRY_* environment variables.

Resource names default to the local stack's; on AWS the template sets them on every worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    # Where a run may read its input, besides the inputs bucket: "s3://bucket/" or
    # "s3://bucket/prefix/" entries, comma-separated (the template's AllowedInputLocations, which
    # also grants the reads in IAM). Whoever asks (event, CLI), nothing else is read.
    allowed_inputs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Models a run may name, as globs over model ids, comma-separated; "*": any model Bedrock serves.
    allowed_models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    # A template that is more than {{ column }} substitutions renders each row in a sandbox process,
    # for at most this long a row (shared/dataplane/sandbox.py).
    template_row_timeout_s: float = Field(2.0, gt=0, le=60)
    # Submitted + in-progress jobs per model, shared by every run: {"model-id or *": limit}.
    model_concurrency: dict[str, int] = Field(default_factory=lambda: {"*": 20})
    job_timeout_hours: int = Field(24, ge=24, le=168)
    # How often poll re-checks an active job; events are the fast path, this is the safety net.
    poll_interval_s: int = Field(60, ge=1, le=900)
    # Failed or missing records are retried once; fewer than this many go on demand instead.
    on_demand_concurrency: int = Field(4, ge=1)
    worker_concurrency: int = Field(4, ge=1)
    visibility_timeout_s: int = Field(120, ge=10)
    # Staging and collecting hold a lease on the run (shared/run_lease.py), renewed every third
    # of this: a duplicate delivery waits, polling every run_lease_poll_s, and a dead holder's
    # lease is taken over this long after its last renewal.
    run_lease_s: float = Field(30, gt=0)
    run_lease_poll_s: float = Field(2.0, gt=0)
    # The watchdog (shared/watchdog.py): how often it sweeps, how long a run or job may show no
    # progress before it is re-driven, how many re-drives or crashes before the run fails.
    watchdog_interval_s: int = Field(30, ge=1)
    stall_after_s: int = Field(300, ge=1)
    max_redrives: int = Field(3, ge=1)
    max_crashes: int = Field(5, ge=1)
    # How long a message may sit in the outbox before the watchdog sends it for the writer.
    outbox_grace_s: int = Field(30, ge=0)
    # A job of Quarry's that holds a slot but that ListModelInvocationJobs has not shown among the
    # model's active jobs for this long has ended (Bedrock lost it): poll fails it and frees its slot.
    absent_job_grace_s: int = Field(900, ge=1)
    # customize: the hours of hosting the cost estimate counts for the gate; how long a hosting Quarry
    # made may live unkept before the watchdog's sweeper deletes it (its run over, lost or stuck).
    gate_hosting_hours: float = Field(1.0, gt=0)
    hosting_ttl_s: int = Field(6 * 3600, ge=60)
    # A batch job with records pending whose processed count has not moved for this long is stuck
    # (a spec's stuck_after_s overrides it); the deadline's margin, at most a tenth of a run's window;
    # the on-demand latency assumed until one is measured (shared/domain/deadlines.py).
    stuck_after_s: int = Field(1800, ge=1)
    deadline_margin_s: int = Field(300, ge=0)
    on_demand_latency_s: float = Field(2.0, gt=0)
    # Runs older than this are not watched (Bedrock's longest job timeout is 7 days).
    watch_days: int = Field(14, ge=1)
    log_level: str = "INFO"
    workdir: Path = Path("/tmp/quarry")

    def queue_name(self, worker: str) -> str:
        return f"{self.queue_prefix}{worker}"

    @field_validator("allowed_inputs", "allowed_models", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def concurrency_for(self, model_id: str) -> int:
        return self.model_concurrency.get(model_id, self.model_concurrency.get("*", 20))
