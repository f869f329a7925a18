"""Every message and event on Quarry's wire, in one place.

Quarry's own messages are frozen models with a `type` literal, a schema_version, the run_id and a
correlation id. AWS's events (S3 Object Created, Bedrock job state changes) arrive in
EventBridge's envelope and are modelled here too, so each queue has one union that validates a
message at the edge, before any handler sees it. Changes add fields; they never rename or drop.
"""
from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, Union
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

from shared.domain.evolving import Evolving
from shared.domain.customization import CustomizationSpec
from shared.domain.evaluation import EvaluationConfig
from shared.domain.spec import RunSpec, SpecOverrides


# A request_id keys the run it starts, and DynamoDB keys are bounded: longer ones are answered
# with a failed run, never stored as a key.
REQUEST_ID_MAX = 128


def new_id() -> str:
    return uuid.uuid4().hex


class Message(Evolving):
    # Fields from a newer worker are kept and re-sent with the message (rolling deploys); an
    # unknown `type`, a future schema_version or a missing field still fails at the edge.
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    run_id: str
    correlation_id: str = Field(default_factory=new_id)


# --- commands ------------------------------------------------------------------------------------
class StartRun(Message):
    """Start a run over one input. Sent by the CLI and by preprocess itself (from S3 and request
    events); consumed by preprocess."""

    type: Literal["StartRun"] = "StartRun"
    input_uri: str
    # A batch run's spec; None for an evaluation (its config is `evaluation`).
    spec: RunSpec | None = None
    origin: Literal["cli", "s3", "event", "child"]
    # What makes a start unique: the same object version or request id never starts two runs.
    source_key: str
    # The request event's request_id, echoed on the run's answer event.
    request_id: str | None = None
    kind: Literal["batch", "evaluate", "customize"] = "batch"
    evaluation: EvaluationConfig | None = None
    # A child run of an evaluation: the parent, which it reports to instead of emailing.
    parent_run_id: str | None = None
    # customize: the spec, and whether to stop after the pre-flight (quarry customize --validate-only).
    customization: CustomizationSpec | None = None
    validate_only: bool = False


class SubmitJob(Message):
    """Admit and create one Bedrock batch job. Sent by preprocess and postprocess (retries), by
    submit itself (a waiting job's next look) and, as a wake, by poll; consumed by submit."""

    type: Literal["SubmitJob"] = "SubmitJob"
    job_key: str
    # The job's admission loop this message belongs to (Job.submit_seq); None from older senders.
    seq: int | None = None
    # Sent by whoever gave a slot of the job's model back (poll at a job's end, submit at a rejected
    # create) so the waiting job is admitted now, not at its loop's next look. It carries the loop's
    # seq and acts only on a job still PENDING; otherwise it is dropped (the loop carries the job).
    wake: bool = False


class CancelRun(Message):
    """Stop a run's jobs and finish it as cancelled. Sent by the CLI; consumed by submit."""

    type: Literal["CancelRun"] = "CancelRun"


class CheckJob(Message):
    """Re-check one job's status; sent delayed by submit and by poll itself; consumed by poll."""

    type: Literal["CheckJob"] = "CheckJob"
    job_key: str
    # The job's check loop this message belongs to (Job.check_seq); None from older senders.
    seq: int | None = None


class CollectRun(Message):
    """A job of the run ended: collect the run if all have. Sent by poll, preprocess (on-demand
    runs) and submit (cancelled jobs); consumed by postprocess."""

    type: Literal["CollectRun"] = "CollectRun"


class RunFinished(Message):
    """A run reached a terminal outcome; sent by postprocess and preprocess; consumed by notify."""

    type: Literal["RunFinished"] = "RunFinished"
    outcome: Literal["SUCCEEDED", "PARTIAL", "FAILED", "CANCELLED"]


# --- events from AWS and other systems, in EventBridge's envelope -----------------------------------
class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str
    source: str
    detail_type: str = Field(alias="detail-type")
    time: str | None = None


class _S3Bucket(BaseModel):
    name: str


class _S3Object(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    key: str
    size: int | None = None
    etag: str | None = Field(None, alias="eTag")
    sequencer: str | None = None

    def candidate_keys(self) -> list[str]:
        """The key as sent, then URL-decoded: S3 notifications URL-encode keys ('+' for a space),
        EventBridge's may not, so the reader tries both and takes the one that exists."""
        decoded = unquote_plus(self.key)
        return [self.key] if decoded == self.key else [self.key, decoded]


class _S3Detail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket: _S3Bucket
    object: _S3Object


class S3ObjectCreated(_Envelope):
    """S3 'Object Created' on the inputs bucket, routed by an EventBridge rule; consumed by preprocess."""

    detail_type: Literal["Object Created"] = Field(alias="detail-type")
    detail: _S3Detail


class BatchRequest(BaseModel):
    """A run requested by another system: where the input is, and the spec or profile to use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_uri: str = Field(pattern=r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/.+", max_length=1100)
    profile: str | None = None
    spec: SpecOverrides = Field(default_factory=SpecOverrides)
    request_id: str | None = Field(None, min_length=1, max_length=REQUEST_ID_MAX,
                                   description="idempotency key; defaults to the event id")


class BatchRequested(_Envelope):
    """'Quarry Batch Requested' on Quarry's bus, from any system; consumed by preprocess.

    The detail is validated against BatchRequest by the handler, not here: a request with the
    wrong schema (or a detail that is JSON but not an object) must still become a failed run and an
    answer to its sender, not a parked message."""

    detail_type: Literal["Quarry Batch Requested"] = Field(alias="detail-type")
    detail: Any


class EvaluationRequest(BaseModel):
    """An evaluation requested by another system: the config inline, or where it is in S3."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: dict[str, Any] | None = None
    config_uri: str | None = Field(None, pattern=r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/.+", max_length=1100)
    request_id: str | None = Field(None, min_length=1, max_length=REQUEST_ID_MAX,
                                   description="idempotency key; defaults to the event id")


class EvaluationRequested(_Envelope):
    """'Quarry Evaluation Requested' on Quarry's bus, from any system; consumed by preprocess. As with
    BatchRequested, the detail is validated by the handler so a bad one is answered, not parked."""

    detail_type: Literal["Quarry Evaluation Requested"] = Field(alias="detail-type")
    detail: Any


class CustomizationRequest(BaseModel):
    """A customization requested by another system: the spec inline, or where it is in S3."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: dict[str, Any] | None = None
    spec_uri: str | None = Field(None, pattern=r"^s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9]/.+", max_length=1100)
    validate_only: bool = False
    request_id: str | None = Field(None, min_length=1, max_length=REQUEST_ID_MAX,
                                   description="idempotency key; defaults to the event id")


class CustomizationRequested(_Envelope):
    """'Quarry Customization Requested' on Quarry's bus, from any system; consumed by preprocess. As
    with BatchRequested, the detail is validated by the handler so a bad one is answered, not parked."""

    detail_type: Literal["Quarry Customization Requested"] = Field(alias="detail-type")
    detail: Any


class _CustomizationJobDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    jobName: str
    jobArn: str
    jobStatus: str
    failureMessage: str | None = None


class CustomizationJobStateChanged(_Envelope):
    """Bedrock's 'Model Customization Job State Change' (best-effort delivery); consumed by poll."""

    detail_type: Literal["Model Customization Job State Change"] = Field(alias="detail-type")
    detail: _CustomizationJobDetail


class HostingSwept(Message):
    """The watchdog's hosting sweeper deleted a hosting Quarry had left (its run over or lost, or
    older than its time-to-live); consumed by notify, which emails about it once."""

    type: Literal["HostingSwept"] = "HostingSwept"
    hosting_arn: str
    hosting_name: str
    reason: str
    hourly_usd: float | None = None


class _BedrockJobDetail(BaseModel):
    model_config = ConfigDict(extra="ignore")

    batchJobName: str
    batchJobArn: str
    status: str
    failureMessage: str | None = None


class BedrockJobStateChanged(_Envelope):
    """Bedrock's 'Batch Inference Job State Change' (best-effort delivery); consumed by poll."""

    detail_type: Literal["Batch Inference Job State Change"] = Field(alias="detail-type")
    detail: _BedrockJobDetail


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("type") or value.get("detail-type")
    return getattr(value, "type", None) or getattr(value, "detail_type", None)


def _union(*members: type[BaseModel]) -> TypeAdapter:
    tagged = [Annotated[m, Tag(m.model_fields["type"].default if "type" in m.model_fields
                              else m.model_fields["detail_type"].annotation.__args__[0])] for m in members]
    return TypeAdapter(Annotated[Union[tuple(tagged)], Discriminator(_kind)])


# One union per queue: what each worker accepts.
PREPROCESS_INBOX = _union(StartRun, S3ObjectCreated, BatchRequested, EvaluationRequested, CustomizationRequested)
SUBMIT_INBOX = _union(SubmitJob, CancelRun)
POLL_INBOX = _union(CheckJob, BedrockJobStateChanged, CustomizationJobStateChanged)
POSTPROCESS_INBOX = _union(CollectRun)
NOTIFY_INBOX = _union(RunFinished, HostingSwept)
