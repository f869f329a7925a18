"""Fault injection, driven through the service's control endpoint (/local-bedrock-api/faults).

A fault is scoped to a model id and/or a job name (a glob; names are unique, so a name is a job),
and may apply a limited number of times. A job takes its faults when it is created. Nothing is injected unless a test or a chaos run asks for it.
"""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infra.local_bedrock.training import TrainingFaults

Outcome = Literal["Failed", "PartiallyCompleted", "Expired", "Stopped"]


class FaultSpec(BaseModel):
    """What to break and where; at least one of outcome, record_error_rate, throttle_creates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str | None = Field(None, description="apply to jobs and calls of this model id")
    job_name: str | None = Field(None, description="apply to jobs whose name matches this glob")
    outcome: Outcome | None = Field(None, description="the status the job ends in")
    # Share of the records processed before the job ends in `outcome` (Failed, Stopped,
    # PartiallyCompleted); those records are written to the output, the rest are not.
    after_fraction: float = Field(0.5, ge=0, le=1)
    failure_message: str | None = None
    record_error_rate: float = Field(0.0, ge=0, le=1)
    record_error_code: int = Field(500, ge=400, le=599)
    record_error_message: str = "InternalServerException: injected record failure"
    throttle_creates: int = Field(0, ge=0, description="reject this many CreateModelInvocationJob calls")
    # The job stays InProgress once this share of its records is processed, processing nothing
    # more (its processed count stops moving), until it is stopped or its timeout ends it.
    stall_after_fraction: float | None = Field(None, ge=0, le=1)
    # --- wrong answers (evaluation tests) ---
    # A controlled difference between two otherwise equal models: this share of the model's answers
    # (batch records and InvokeModel/Converse calls alike) is replaced by WRONG_ANSWER. Which answers
    # is decided by a hash of the model id and the request, so the same record is wrong on every
    # path and every rerun. Scope it by model_id; a job_name limits it to batch jobs of that name.
    wrong_answer_rate: float = Field(0.0, ge=0, le=1, description="share of answers replaced by a wrong one")
    times: int | None = Field(None, ge=1, description="jobs this fault applies to before it is spent")
    # --- provisioned throughput and custom model deployments (hosting) ---
    # Scoped by model_id (the modelId the create names, or its base model id) and by name below.
    provisioned_name: str | None = Field(None, description="apply to PTs and deployments whose name matches this glob")
    provisioning_outcome: Literal["Failed"] | None = Field(None, description="the status a new PT or deployment ends in")
    provisioning_seconds: float | None = Field(None, ge=0, description="seconds a PT or deployment stays Creating/Updating")
    throttle_provisioning: int = Field(0, ge=0, description="reject this many PT and deployment creates")
    # --- customization jobs ---
    # Scoped by model_id (the job's base model id) and job_name (a glob on the customization job's name).
    training_outcome: Literal["Failed", "Stopped"] | None = Field(
        None, description="the status a customization job ends in, part-way through its training")
    training_after_fraction: float = Field(0.5, ge=0, le=1, description="share of the training steps done first")
    training_diverges: bool = Field(False, description="the training loss rises instead of falling")
    learn_nothing: bool = Field(False, description="the custom model answers exactly as its base model")
    throttle_customization_creates: int = Field(0, ge=0, description="reject this many CreateModelCustomizationJob calls")

    @model_validator(mode="after")
    def _does_something(self) -> "FaultSpec":
        if (self.outcome is None and self.record_error_rate == 0 and self.throttle_creates == 0
                and self.wrong_answer_rate == 0 and self.stall_after_fraction is None
                and not self.is_hosting and not self.is_customization):
            raise ValueError("a fault needs an outcome, a record_error_rate, throttle_creates, a wrong_answer_rate, "
                             "a stall_after_fraction, "
                             "a provisioning_outcome, provisioning_seconds or throttle_provisioning, "
                             "a training_outcome, training_diverges, learn_nothing or throttle_customization_creates")
        return self

    @property
    def is_hosting(self) -> bool:
        """Whether this fault acts on provisioned throughputs and deployments."""
        return (self.provisioning_outcome is not None or self.provisioning_seconds is not None
                or self.throttle_provisioning > 0)

    @property
    def is_customization(self) -> bool:
        """Whether this fault acts on model customization jobs."""
        return (self.training_outcome is not None or self.training_diverges or self.learn_nothing
                or self.throttle_customization_creates > 0)

    def matches_hosting(self, *, model_ids: tuple[str, ...], name: str) -> bool:
        if self.model_id is not None and self.model_id not in model_ids:
            return False
        return self.provisioned_name is None or fnmatch.fnmatchcase(name, self.provisioned_name)

    def matches(self, *, model_id: str, job_name: str) -> bool:
        if self.model_id is not None and self.model_id != model_id:
            return False
        return self.job_name is None or fnmatch.fnmatchcase(job_name, self.job_name)


class Fault(BaseModel):
    """A registered fault and how much of it is left."""

    fault_id: str
    spec: FaultSpec
    jobs_left: int | None
    throttles_left: int
    provisioning_throttles_left: int = 0
    hostings_left: int | None = None
    customization_throttles_left: int = 0
    customizations_left: int | None = None


class JobFaults(BaseModel):
    """The faults one job was given when it was created; they stay with the job."""

    outcome: Outcome | None = None
    after_fraction: float = 1.0
    failure_message: str | None = None
    record_error_rate: float = 0.0
    record_error_code: int = 500
    record_error_message: str = ""
    wrong_answer_rate: float = 0.0
    stall_after_fraction: float | None = None

    def record_fails(self, job_id: str, record_id: str) -> bool:
        """Whether this record gets an injected error; stable for a job and record."""
        if self.record_error_rate <= 0:
            return False
        digest = hashlib.blake2b(f"{job_id}/{record_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.record_error_rate


class FaultRegistry:
    """The registered faults, consulted on every create."""

    def __init__(self) -> None:
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> Fault:
        fault = Fault(fault_id=f"fault-{next(self._ids)}", spec=spec, jobs_left=spec.times,
                      throttles_left=spec.throttle_creates,
                      provisioning_throttles_left=spec.throttle_provisioning, hostings_left=spec.times,
                      customization_throttles_left=spec.throttle_customization_creates,
                      customizations_left=spec.times)
        self._faults[fault.fault_id] = fault
        return fault

    def remove(self, fault_id: str) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self) -> None:
        self._faults.clear()

    def all(self) -> list[Fault]:
        return list(self._faults.values())

    def take_throttle(self, model_id: str, job_name: str) -> bool:
        """Whether this create is throttled; each throttle is used up once."""
        for fault in self._faults.values():
            if fault.throttles_left > 0 and fault.spec.matches(model_id=model_id, job_name=job_name):
                fault.throttles_left -= 1
                return True
        return False

    def for_new_job(self, *, model_id: str, job_name: str) -> JobFaults:
        """The faults a job gets at creation; a fault with `times` is spent as jobs take it."""
        result = JobFaults()
        for fault in list(self._faults.values()):
            spec = fault.spec
            if (spec.outcome is None and spec.record_error_rate == 0 and spec.wrong_answer_rate == 0
                    and spec.stall_after_fraction is None) \
                    or fault.jobs_left == 0:
                continue
            if not spec.matches(model_id=model_id, job_name=job_name):
                continue
            if spec.outcome is not None:
                result.outcome, result.after_fraction = spec.outcome, spec.after_fraction
                result.failure_message = spec.failure_message
            if spec.record_error_rate > 0:
                result.record_error_rate = spec.record_error_rate
                result.record_error_code = spec.record_error_code
                result.record_error_message = spec.record_error_message
            if spec.wrong_answer_rate > 0:
                result.wrong_answer_rate = spec.wrong_answer_rate
            if spec.stall_after_fraction is not None:
                result.stall_after_fraction = spec.stall_after_fraction
            if fault.jobs_left is not None:
                fault.jobs_left -= 1
        return result


# --- wrong answers ------------------------------------------------------------------------------------
# What a model answers in place of its own answer under a wrong_answer_rate fault: no reference
# answer contains it, so every metric scores it as wrong.
WRONG_ANSWER = "I am not sure."


def wrong_answer_rate(registry: FaultRegistry, *, model_id: str) -> float:
    """The wrong-answer share for an InvokeModel/Converse call of this model (faults scoped to a
    job name apply to batch jobs only); not spent by calls."""
    rates = [f.spec.wrong_answer_rate for f in registry.all()
             if f.spec.wrong_answer_rate > 0 and f.spec.job_name is None and f.spec.matches(model_id=model_id, job_name="")]
    return max(rates, default=0.0)


def answer_is_wrong(rate: float, model_id: str, request_key: str) -> bool:
    """Whether this model's answer to this request is replaced: stable for a model and request."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{model_id}\n{request_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


class HostingFaults(BaseModel):
    """The faults one provisioned throughput or deployment was given when it was created."""

    outcome: Literal["Failed"] | None = None
    failure_message: str | None = None
    seconds: float | None = None


def take_provisioning_throttle(registry: FaultRegistry, *, model_ids: tuple[str, ...], name: str) -> bool:
    """Whether this PT or deployment create is throttled; each throttle is used up once."""
    for fault in registry.all():
        if fault.provisioning_throttles_left > 0 and fault.spec.matches_hosting(model_ids=model_ids, name=name):
            fault.provisioning_throttles_left -= 1
            return True
    return False


def for_new_hosting(registry: FaultRegistry, *, model_ids: tuple[str, ...], name: str) -> HostingFaults:
    """The faults a new PT or deployment gets; a fault with `times` is spent as they take it."""
    result = HostingFaults()
    for fault in registry.all():
        spec = fault.spec
        if (spec.provisioning_outcome is None and spec.provisioning_seconds is None) or fault.hostings_left == 0:
            continue
        if not spec.matches_hosting(model_ids=model_ids, name=name):
            continue
        if spec.provisioning_outcome is not None:
            result.outcome = spec.provisioning_outcome
            result.failure_message = spec.failure_message
        if spec.provisioning_seconds is not None:
            result.seconds = spec.provisioning_seconds
        if fault.hostings_left is not None:
            fault.hostings_left -= 1
    return result


# --- customization jobs -----------------------------------------------------------------------------
def take_customization_throttle(registry: FaultRegistry, *, model_id: str, job_name: str) -> bool:
    """Whether this CreateModelCustomizationJob is throttled; each throttle is used up once."""
    for fault in registry.all():
        if fault.customization_throttles_left > 0 and fault.spec.matches(model_id=model_id, job_name=job_name):
            fault.customization_throttles_left -= 1
            return True
    return False


def for_new_customization(registry: FaultRegistry, *, model_id: str, job_name: str) -> TrainingFaults:
    """The faults a new customization job gets; a fault with `times` is spent as jobs take it."""
    faults: dict[str, object] = {}
    for fault in registry.all():
        spec = fault.spec
        if not (spec.training_outcome or spec.training_diverges or spec.learn_nothing) or fault.customizations_left == 0:
            continue
        if not spec.matches(model_id=model_id, job_name=job_name):
            continue
        if spec.training_outcome == "Failed":
            faults.update(fail_after_fraction=spec.training_after_fraction, failure_message=spec.failure_message)
        elif spec.training_outcome == "Stopped":
            faults.update(stop_after_fraction=spec.training_after_fraction)
        faults["diverge"] = bool(faults.get("diverge")) or spec.training_diverges
        faults["learn_nothing"] = bool(faults.get("learn_nothing")) or spec.learn_nothing
        if fault.customizations_left is not None:
            fault.customizations_left -= 1
    return TrainingFaults(**faults)  # type: ignore[arg-type]
