"""Runs and jobs, and the state machine every change to them goes through.

A run has a kind (batch is the first; customization and evaluation reuse the same model) and owns
jobs. Each job is one Bedrock batch job over one chunk (attempt 0) or its retry (attempt 1).
Every change is a transition checked here and written conditionally on the old status and
version by the store, so two workers can never both move the same item.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field

from shared.domain.customization import CustomizationSpec
from shared.domain.evaluation import EvaluationConfig
from shared.domain.evolving import Evolving
from shared.domain.spec import RunSpec

# batch: one spec over one input. evaluate: a parent over one child batch run per model, scored
# together when every child has ended (its children are batch runs with parent_run_id set).
# customize: a customization job, then its hosting, then a gate (an evaluate child run).
RunKind = Literal["batch", "evaluate", "customize"]
# What a job drives on Bedrock: a batch inference job, a model customization job, or the hosting
# (provisioned throughput or custom model deployment) of a custom model.
JobFamily = Literal["batch_job", "customization_job", "hosting"]
RunStatus = Literal["PREPARING", "RUNNING", "FINALIZING", "CANCELLING", "SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"]
JobStatus = Literal["PENDING", "SUBMITTING", "SUBMITTED", "RUNNING", "COMPLETED", "PARTIAL", "FAILED", "STOPPED",
                    "EXPIRED", "CANCELLED"]

RUN_TERMINAL: frozenset[str] = frozenset({"SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"})
JOB_TERMINAL: frozenset[str] = frozenset({"COMPLETED", "PARTIAL", "FAILED", "STOPPED", "EXPIRED", "CANCELLED"})
# Job statuses that hold one of the model's concurrency slots.
JOB_HOLDS_SLOT: frozenset[str] = frozenset({"SUBMITTING", "SUBMITTED", "RUNNING"})

_RUN_MOVES: dict[str, frozenset[str]] = {
    "PREPARING": frozenset({"RUNNING", "FINALIZING", "FAILED", "CANCELLING"}),
    "RUNNING": frozenset({"FINALIZING", "CANCELLING", "FAILED"}),
    "FINALIZING": frozenset({"RUNNING", "SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"}),
    "CANCELLING": frozenset({"FINALIZING", "CANCELLED", "FAILED"}),
}
_JOB_MOVES: dict[str, frozenset[str]] = {
    "PENDING": frozenset({"SUBMITTING", "CANCELLED"}),
    # Back to PENDING: Bedrock throttled the create, so the job gives its slot back while it waits.
    "SUBMITTING": frozenset({"PENDING", "SUBMITTED", "RUNNING", "FAILED", "CANCELLED"} | JOB_TERMINAL),
    "SUBMITTED": frozenset({"RUNNING"} | JOB_TERMINAL),
    "RUNNING": JOB_TERMINAL,
}

# Bedrock's job statuses, as Quarry's job statuses.
FROM_BEDROCK: dict[str, JobStatus] = {
    "Submitted": "SUBMITTED", "Validating": "SUBMITTED", "Scheduled": "SUBMITTED",
    "InProgress": "RUNNING", "Stopping": "RUNNING",
    "Completed": "COMPLETED", "PartiallyCompleted": "PARTIAL", "Failed": "FAILED",
    "Stopped": "STOPPED", "Expired": "EXPIRED",
}

_JOB_NAME = re.compile(r"^quarry-(?P<run_id>[0-9a-f]{32})-(?P<index>\d{5})-(?P<attempt>\d)$")


class IllegalTransition(ValueError):
    """A move the state machine does not allow: a stale or duplicate message (the item moved on
    since the message was sent), so the consumer drops the message with a log line."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def check_run_move(current: str, target: str) -> None:
    if target not in _RUN_MOVES.get(current, frozenset()):
        raise IllegalTransition(f"run cannot move from {current} to {target}")


def check_job_move(current: str, target: str) -> None:
    if target not in _JOB_MOVES.get(current, frozenset()):
        raise IllegalTransition(f"job cannot move from {current} to {target}")


def job_key(index: int, attempt: int) -> str:
    return f"{index:05d}-{attempt}"


def job_name(run_id: str, key: str) -> str:
    """The Bedrock job name: it names the run and job, so an event finds its job without a lookup."""
    return f"quarry-{run_id}-{key}"


def parse_job_name(name: str) -> tuple[str, str] | None:
    """(run_id, job_key) of a Quarry job name; None for a job Quarry did not start."""
    match = _JOB_NAME.match(name)
    if match is None:
        return None
    return match["run_id"], job_key(int(match["index"]), int(match["attempt"]))


class Job(Evolving):
    """One Bedrock batch job of a run. Fields a newer worker added are kept and written back."""

    run_id: str
    job_key: str
    family: JobFamily = "batch_job"
    index: int
    attempt: int = 0
    status: JobStatus = "PENDING"
    version: int = 0
    model_id: str
    chunk_uri: str
    output_uri: str
    records: int
    bytes: int
    first_row: int
    end_row: int
    bedrock_arn: str | None = None
    bedrock_status: str | None = None
    message: str | None = None
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    # The one live check loop: a CheckJob carrying another number is a stale duplicate.
    check_seq: int = 0
    # The one live admission loop: each wait for a slot or a throttle sends a fresh SubmitJob
    # with the next number, so waiting never counts towards the queue's receive limit.
    submit_seq: int = 0
    throttles: int = 0  # creates Bedrock throttled in a row: the backoff grows with these only
    # Since when Bedrock has not listed the job among its active ones, once that lasted longer than
    # the grace period (submit's slot reconciliation sets it): poll then ends the job.
    absent_since: dt.datetime | None = None
    # When the processed count last moved (poll), and since when the job has been stuck: records
    # pending and no progress for the spec's stuck_after_s (shared/domain/deadlines.py).
    progressed_at: dt.datetime | None = None
    stuck_since: dt.datetime | None = None
    # Why Quarry stopped the job itself (a deadline's cutoff, or stuck with a deadline): its missing
    # records go on demand, never to a retry job.
    cut_short: str | None = None
    # customization_job: the custom model it made and its last losses. hosting: provisioned or
    # deployment (its name is the job's name, so a crash before its ARN was kept still finds it).
    custom_model_arn: str | None = None
    training_loss: float | None = None
    validation_loss: float | None = None
    hosting_kind: str | None = None
    created_at: dt.datetime = Field(default_factory=now)
    updated_at: dt.datetime = Field(default_factory=now)

    @property
    def name(self) -> str:
        return job_name(self.run_id, self.job_key)

    @property
    def client_token(self) -> str:
        # Deterministic: a crash or redelivery re-sends the same token, and Bedrock answers with
        # the job it already made instead of billing a second one.
        return self.name

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL


class Run(Evolving):
    """One run: an input, a spec, its jobs' progress and, at the end, its results. Fields a newer
    worker added are kept and written back."""

    run_id: str
    kind: RunKind = "batch"
    status: RunStatus = "PREPARING"
    version: int = 0
    spec: RunSpec | None  # None when the spec itself was invalid (the run fails at once)
    input_uri: str
    origin: str
    source_key: str
    request_id: str | None = None  # a request event's request_id, echoed on its answer
    created_at: dt.datetime = Field(default_factory=now)
    updated_at: dt.datetime = Field(default_factory=now)
    total_rows: int | None = None
    jobs_total: int = 0
    on_demand: bool = False
    on_demand_records: int = 0  # records sent to InvokeModel: a small run, or retries of a few
    result_uri: str | None = None
    summary: dict[str, Any] | None = None
    error: str | None = None
    notified_at: dt.datetime | None = None
    # notify's claim before it sends (deterministic id) and its mark once the email went out.
    notifying_at: dt.datetime | None = None
    notification_id: str | None = None
    emailed_at: dt.datetime | None = None
    cancel_requested: bool = False
    # The watchdog's view: how often it re-drove the run, and why the run is stalled right now.
    redrives: int = 0
    stalled: str | None = None
    # Records answered from the response cache instead of Bedrock (spec.cache reuse).
    cached_records: int = 0
    # Rows whose request repeats an earlier row's: sent once, the answer fanned out to each.
    deduplicated_records: int = 0
    # A run with a deadline: one on-demand call's latency measured before its jobs start (seconds),
    # from which poll plans the batch cutoff.
    on_demand_latency_s: float | None = None
    # evaluate: the config; the children's run ids and resolved model ids by model name; the
    # staged dataset's facts (rows, hash, shape). A child: the evaluation it belongs to.
    evaluation: EvaluationConfig | None = None
    children: dict[str, str] = Field(default_factory=dict)
    model_ids: dict[str, str] = Field(default_factory=dict)
    dataset: dict[str, Any] | None = None
    parent_run_id: str | None = None
    # evaluate with a judge: the judge's child run ids by model name, once generation ended (None:
    # the judge stage has not started; empty: no model had answers to judge). latency: the
    # on-demand probe's figures by model name (n, mean_ms, p50_ms, p90_ms), measured once.
    judges: dict[str, str] | None = None
    latency: dict[str, dict[str, Any]] | None = None
    # customize: the spec; only the pre-flight (no job) when validate_only; the pre-flight's figures
    # (report URIs, counts, hashes, cost); the gate's verdict; the loss curve [[step, loss], ...].
    customization: CustomizationSpec | None = None
    validate_only: bool = False
    preflight: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    loss_curve: list[list[float]] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in RUN_TERMINAL

    @property
    def settled(self) -> bool:
        """Nothing more will happen to it: it ended and its notice went out."""
        return self.terminal and self.notified_at is not None


def outcome_of(rows: int, failed: int, cancelled: bool) -> Literal["SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"]:
    """A finished run's outcome from its row counts."""
    if cancelled:
        return "CANCELLED"
    if failed == 0:
        return "SUCCEEDED"
    return "FAILED" if failed >= rows else "PARTIAL"
