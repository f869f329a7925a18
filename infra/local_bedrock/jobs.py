"""Model invocation jobs: their state, the store that creates, finds and lists them, and the
rules Bedrock applies at creation (idempotency, unique names, the per-model job quota)."""
from __future__ import annotations

import datetime as dt
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import structlog

from infra.local_bedrock import catalogue
from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.errors import conflict, not_found, quota_exceeded
from infra.local_bedrock.faults import JobFaults
from infra.local_bedrock.pagination import aware, page

log = structlog.get_logger("local_bedrock.jobs")

TERMINAL = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
# What Bedrock counts against "submitted + in-progress jobs per base model".
ACTIVE = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class Job:
    """One model invocation job, as GetModelInvocationJob describes it."""

    job_id: str
    job_arn: str
    job_name: str
    model: FoundationModel
    model_id: str  # as the caller gave it: id, ARN or inference profile
    role_arn: str
    client_request_token: str | None
    input_data_config: dict[str, Any]
    output_data_config: dict[str, Any]
    timeout_hours: int
    invocation_type: str | None
    vpc_config: dict[str, Any] | None
    faults: JobFaults
    submit_time: dt.datetime = field(default_factory=utcnow)
    status: str = "Submitted"
    message: str | None = None
    last_modified_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    total_records: int | None = None
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    stop_requested: bool = False

    @property
    def input_uri(self) -> str:
        return self.input_data_config["s3InputDataConfig"]["s3Uri"]

    @property
    def output_uri(self) -> str:
        return self.output_data_config["s3OutputDataConfig"]["s3Uri"]

    @property
    def converse(self) -> bool:
        return self.invocation_type == "Converse"

    def expiration_time(self, seconds_per_hour: float) -> dt.datetime:
        return self.submit_time + dt.timedelta(seconds=self.timeout_hours * seconds_per_hour)

    def set_status(self, status: str, message: str | None = None) -> None:
        self.status = status
        if message is not None:
            self.message = message
        self.last_modified_time = utcnow()
        if status in TERMINAL:
            self.end_time = self.last_modified_time

    def describe(self, seconds_per_hour: float) -> dict[str, Any]:
        """The GetModelInvocationJob response (and the list summary, which has the same members)."""
        described: dict[str, Any] = {
            "jobArn": self.job_arn,
            "jobName": self.job_name,
            "modelId": self.model_id,
            "roleArn": self.role_arn,
            "status": self.status,
            "submitTime": self.submit_time,
            "lastModifiedTime": self.last_modified_time or self.submit_time,
            "inputDataConfig": self.input_data_config,
            "outputDataConfig": self.output_data_config,
            "timeoutDurationInHours": self.timeout_hours,
            "jobExpirationTime": self.expiration_time(seconds_per_hour),
        }
        optional = {
            "clientRequestToken": self.client_request_token,
            "message": self.message,
            "endTime": self.end_time,
            "vpcConfig": self.vpc_config,
            "modelInvocationType": self.invocation_type,
        }
        described.update({key: value for key, value in optional.items() if value is not None})
        # Bedrock reports record counts only once validation has counted the records.
        if self.total_records is not None:
            described.update(
                totalRecordCount=self.total_records,
                processedRecordCount=self.processed,
                successRecordCount=self.succeeded,
                errorRecordCount=self.failed,
            )
        return described

    def to_record(self) -> dict[str, Any]:
        """The job as JSON-ready data, to be saved under the service's home."""
        record = {key: value for key, value in self.__dict__.items() if key not in ("model", "faults")}
        record.update(model_id_resolved=self.model.model_id, faults=self.faults.model_dump())
        for name in ("submit_time", "last_modified_time", "end_time"):
            record[name] = getattr(self, name).isoformat() if getattr(self, name) is not None else None
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Job":
        fields = dict(record)
        fields["model"] = catalogue.resolve(fields.pop("model_id_resolved"))
        fields["faults"] = JobFaults.model_validate(fields["faults"])
        for name in ("submit_time", "last_modified_time", "end_time"):
            fields[name] = dt.datetime.fromisoformat(fields[name]) if fields[name] is not None else None
        return cls(**fields)


class JobStore:
    """Every job of this service; the service saves them under its home on every status change."""

    def __init__(self, *, region: str, account_id: str, max_active_per_model: int) -> None:
        self._region = region
        self._account_id = account_id
        self._max_active = max_active_per_model
        self._jobs: dict[str, Job] = {}
        self._by_token: dict[str, str] = {}

    def by_token(self, token: str | None) -> Job | None:
        """The job an earlier create with this clientRequestToken made, if any."""
        return self._jobs[self._by_token[token]] if token in self._by_token else None

    def create(self, *, params: dict[str, Any], model: FoundationModel, faults: JobFaults) -> Job:
        """A new job in Submitted, after Bedrock's creation checks."""
        name = params["jobName"]
        if any(job.job_name == name for job in self._jobs.values()):
            raise conflict(f"A model invocation job with the name {name} already exists.")
        active = sum(1 for job in self._jobs.values() if job.model == model and job.status in ACTIVE)
        if active >= self._max_active:
            raise quota_exceeded(
                f"You have reached the limit of {self._max_active} submitted and in-progress batch inference "
                f"jobs for model {model.model_id}. Wait for a job to finish, or request a quota increase."
            )
        job_id = _new_job_id()
        job = Job(
            job_id=job_id,
            job_arn=f"arn:aws:bedrock:{self._region}:{self._account_id}:model-invocation-job/{job_id}",
            job_name=name,
            model=model,
            model_id=params["modelId"],
            role_arn=params["roleArn"],
            client_request_token=params.get("clientRequestToken"),
            input_data_config=params["inputDataConfig"],
            output_data_config=params["outputDataConfig"],
            timeout_hours=params.get("timeoutDurationInHours", 24),
            invocation_type=params.get("modelInvocationType"),
            vpc_config=params.get("vpcConfig"),
            faults=faults,
        )
        self._jobs[job_id] = job
        if job.client_request_token:
            self._by_token[job.client_request_token] = job_id
        return job

    def get(self, identifier: str) -> Job:
        """A job by id or ARN."""
        job_id = identifier.rsplit("/", 1)[-1]
        try:
            return self._jobs[job_id]
        except KeyError:
            raise not_found(f"The model invocation job {identifier} was not found.") from None

    def list(self, params: dict[str, Any]) -> tuple[list[Job], str | None]:
        """One page of jobs matching the ListModelInvocationJobs filters, and the next token."""
        jobs = [job for job in self._jobs.values() if _matches(job, params)]
        jobs.sort(key=lambda job: (job.submit_time, job.job_id), reverse=params.get("sortOrder", "Descending") == "Descending")
        return page(jobs, params)

    def clear(self) -> None:
        self._jobs.clear()
        self._by_token.clear()

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def to_records(self) -> list[dict[str, Any]]:
        return [job.to_record() for job in self._jobs.values()]

    def load_records(self, records: list[dict[str, Any]]) -> list[Job]:
        """Restore saved jobs; a record that cannot be read back is logged and left out."""
        loaded = []
        for record in records:
            try:
                job = Job.from_record(record)
            except (KeyError, TypeError, ValueError, catalogue.UnknownModel) as exc:
                log.warning("job_not_restored", job_id=record.get("job_id"), error=repr(exc))
                continue
            self._jobs[job.job_id] = job
            if job.client_request_token:
                self._by_token[job.client_request_token] = job.job_id
            loaded.append(job)
        return loaded


def _matches(job: Job, params: dict[str, Any]) -> bool:
    if "statusEquals" in params and job.status != params["statusEquals"]:
        return False
    if "nameContains" in params and params["nameContains"] not in job.job_name:
        return False
    if "submitTimeAfter" in params and job.submit_time <= aware(params["submitTimeAfter"]):
        return False
    if "submitTimeBefore" in params and job.submit_time >= aware(params["submitTimeBefore"]):
        return False
    return True


def _new_job_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))

