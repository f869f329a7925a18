"""Model customization jobs: their state, the rules Bedrock applies at creation, and their life.

A job is InProgress from the moment it is created and moves through three sub-statuses, as
GetModelCustomizationJob's statusDetails shows them: validation (the training and validation data
are read from S3, checked record by record as Bedrock checks them, and copied under the
service's home), data processing, and training (a trainer, fast or real as the engine configured
for the base model, turns the data into weights). It ends Completed, with a custom model in the
store, or Failed with a message that names the file and line at fault, or Stopped when asked.
The metrics CSVs are written under the job's output URI as training progresses, in Bedrock's
layout, and an event goes to EventBridge at every change of the job's status.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import secrets
import shutil
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import orjson
import structlog
from botocore.exceptions import ClientError

from infra.local_bedrock import catalogue, hyperparameters, s3io
from infra.local_bedrock.catalogue import FoundationModel
from infra.local_bedrock.custom_models import CustomModel, CustomModelStore
from infra.local_bedrock.engines.fast import count_tokens
from infra.local_bedrock.errors import conflict, not_found, validation
from infra.local_bedrock.job_tasks import JobStopped, JobTasks
from infra.local_bedrock.pagination import aware, page
from infra.local_bedrock.persistence import StateDir
from infra.local_bedrock.s3io import InputFile, JobFailure
from infra.local_bedrock.settings import Settings
from infra.local_bedrock.training import (
    Trainer, TrainingDone, TrainingFailed, TrainingFaults, TrainingSpec, TrainingStep, ValidationResult,
)

log = structlog.get_logger("local_bedrock.customization")

TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
SUPPORTED_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")
# The sub-statuses, in the order a job goes through them.
STAGES = ("validationDetails", "dataProcessingDetails", "trainingDetails")
# The fields a record of each customization type holds, exactly.
RECORD_FIELDS = {"FINE_TUNING": ("prompt", "completion"), "CONTINUED_PRE_TRAINING": ("input",)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


@dataclass
class Stage:
    """One sub-status of a job (validation, data processing, training)."""

    status: str = "NotStarted"
    creation_time: dt.datetime | None = None
    last_modified_time: dt.datetime | None = None

    def set(self, status: str) -> None:
        now = utcnow()
        self.creation_time = self.creation_time or now
        self.status, self.last_modified_time = status, now

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"status": self.status}
        if self.creation_time is not None:
            described.update(creationTime=self.creation_time, lastModifiedTime=self.last_modified_time)
        return described

    def to_record(self) -> dict[str, Any]:
        return {"status": self.status, "creation_time": _iso(self.creation_time),
                "last_modified_time": _iso(self.last_modified_time)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Stage":
        return cls(record["status"], _time(record["creation_time"]), _time(record["last_modified_time"]))


@dataclass
class CustomizationJob:
    """One model customization job, as GetModelCustomizationJob describes it."""

    job_id: str
    job_arn: str
    job_name: str
    base_model: FoundationModel
    customization_type: str
    role_arn: str
    client_request_token: str | None
    output_model_name: str
    output_model_arn: str  # reserved at create; reported once the job has Completed
    hyper_parameters: dict[str, str]
    training_data_config: dict[str, Any]
    validation_data_config: dict[str, Any] | None
    output_data_config: dict[str, Any]
    faults: TrainingFaults
    vpc_config: dict[str, Any] | None = None
    custom_model_kms_key_id: str | None = None
    job_tags: list[dict[str, str]] = field(default_factory=list)
    custom_model_tags: list[dict[str, str]] = field(default_factory=list)
    creation_time: dt.datetime = field(default_factory=utcnow)
    status: str = "InProgress"
    failure_message: str | None = None
    last_modified_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    stages: dict[str, Stage] = field(default_factory=lambda: {name: Stage() for name in STAGES})
    training_loss: float | None = None
    validation_loss: float | None = None
    stop_requested: bool = False

    @property
    def training_uri(self) -> str:
        return self.training_data_config["s3Uri"]

    @property
    def validation_uris(self) -> list[str]:
        return [v["s3Uri"] for v in (self.validation_data_config or {}).get("validators", [])]

    @property
    def output_prefix(self) -> str:
        """Where this job's artifacts go: `<outputDataConfig.s3Uri>/model-customization-job-<id>/`."""
        return f"{self.output_data_config['s3Uri'].rstrip('/')}/model-customization-job-{self.job_id}/"

    @property
    def custom_model_id(self) -> str:
        return self.output_model_arn.rsplit("/", 1)[-1]

    def set_status(self, status: str, message: str | None = None) -> None:
        self.status = status
        if message is not None:
            self.failure_message = message
        self.last_modified_time = utcnow()
        if status in TERMINAL:
            self.end_time = self.last_modified_time

    def current_stage(self) -> Stage:
        """The sub-status in progress (or the last started one)."""
        started = [self.stages[name] for name in STAGES if self.stages[name].status != "NotStarted"]
        return started[-1] if started else self.stages[STAGES[0]]

    def describe(self, region: str) -> dict[str, Any]:
        """The GetModelCustomizationJob response."""
        described: dict[str, Any] = {
            "jobArn": self.job_arn,
            "jobName": self.job_name,
            "outputModelName": self.output_model_name,
            "roleArn": self.role_arn,
            "status": self.status,
            "statusDetails": {name: stage.describe() for name, stage in self.stages.items()},
            "creationTime": self.creation_time,
            "lastModifiedTime": self.last_modified_time or self.creation_time,
            "baseModelArn": self.base_model.arn(region),
            "hyperParameters": self.hyper_parameters,
            "trainingDataConfig": self.training_data_config,
            # Required in the response: an empty list of validators when none was given.
            "validationDataConfig": self.validation_data_config or {"validators": []},
            "outputDataConfig": self.output_data_config,
            "customizationType": self.customization_type,
        }
        optional = {
            "outputModelArn": self.output_model_arn if self.status == "Completed" else None,
            "clientRequestToken": self.client_request_token,
            "failureMessage": self.failure_message if self.status == "Failed" else None,
            "endTime": self.end_time,
            "vpcConfig": self.vpc_config,
            "trainingMetrics": {"trainingLoss": self.training_loss} if self.training_loss is not None else None,
            "validationMetrics": ([{"validationLoss": self.validation_loss}]
                                  if self.validation_loss is not None else None),
        }
        described.update({key: value for key, value in optional.items() if value is not None})
        return described

    def summary(self, region: str) -> dict[str, Any]:
        """The ListModelCustomizationJobs summary."""
        summary: dict[str, Any] = {
            "jobArn": self.job_arn,
            "baseModelArn": self.base_model.arn(region),
            "jobName": self.job_name,
            "status": self.status,
            "statusDetails": {name: stage.describe() for name, stage in self.stages.items()},
            "lastModifiedTime": self.last_modified_time or self.creation_time,
            "creationTime": self.creation_time,
            "customModelName": self.output_model_name,
            "customizationType": self.customization_type,
        }
        if self.status == "Completed":
            summary["customModelArn"] = self.output_model_arn
        if self.end_time is not None:
            summary["endTime"] = self.end_time
        return summary

    def to_record(self) -> dict[str, Any]:
        record = {key: value for key, value in self.__dict__.items()
                  if key not in ("base_model", "faults", "stages", "creation_time", "last_modified_time", "end_time")}
        record.update(
            base_model_id=self.base_model.model_id,
            faults=self.faults.__dict__,
            stages={name: stage.to_record() for name, stage in self.stages.items()},
            creation_time=_iso(self.creation_time),
            last_modified_time=_iso(self.last_modified_time),
            end_time=_iso(self.end_time),
        )
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "CustomizationJob":
        fields = dict(record)
        fields["base_model"] = catalogue.resolve(fields.pop("base_model_id"))
        fields["faults"] = TrainingFaults(**fields["faults"])
        fields["stages"] = {name: Stage.from_record(stage) for name, stage in fields["stages"].items()}
        for name in ("creation_time", "last_modified_time", "end_time"):
            fields[name] = _time(fields[name])
        return cls(**fields)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _time(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text is not None else None


# --- creation -----------------------------------------------------------------------------------------
def base_model_for(identifier: str) -> FoundationModel:
    """The foundation model a job customizes, by id or ARN."""
    try:
        return catalogue.resolve(identifier)
    except catalogue.UnknownModel:
        raise validation(f"The provided base model identifier is invalid: {identifier}. "
                         "ListFoundationModels(byCustomizationType=...) shows the models that can be customized.") from None


def checked_request(params: dict[str, Any], model: FoundationModel) -> tuple[str, dict[str, str]]:
    """The customization type and the full hyperparameters of a create, after Bedrock's checks."""
    kind = params.get("customizationType", "FINE_TUNING")
    if kind not in SUPPORTED_TYPES or kind not in model.customizations:
        supported = ", ".join(model.customizations) or "none"
        raise validation(f"The customization type {kind} is not supported for the base model {model.model_id}. "
                         f"Supported customization types for this model: {supported}.")
    if params.get("customizationConfig"):
        raise validation("customizationConfig applies to DISTILLATION and REINFORCEMENT_FINE_TUNING jobs only.")
    training = params["trainingDataConfig"]
    if not training.get("s3Uri"):
        raise validation("trainingDataConfig.s3Uri is required: the local Bedrock trains from an S3 file or prefix, "
                         "not from invocation logs.")
    return kind, hyperparameters.resolve(model, params.get("hyperParameters"))


class CustomizationJobStore:
    """Every customization job of this service, by id."""

    def __init__(self, *, region: str, account_id: str) -> None:
        self._region = region
        self._account_id = account_id
        self._jobs: dict[str, CustomizationJob] = {}

    def by_token(self, token: str | None) -> CustomizationJob | None:
        """The job an earlier create with this clientRequestToken made, if any."""
        if not token:
            return None
        return next((job for job in self._jobs.values() if job.client_request_token == token), None)

    def model_name_reserved(self, name: str) -> bool:
        """Whether a job that has not ended will create a custom model of this name."""
        return any(job.output_model_name == name and job.status not in TERMINAL for job in self._jobs.values())

    def create(self, params: dict[str, Any], *, model: FoundationModel, kind: str, hyper_parameters: dict[str, str],
               faults: TrainingFaults, model_name_taken: Callable[[str], bool]) -> CustomizationJob:
        """A new InProgress job, after the uniqueness checks on its name and its model's name."""
        name, model_name = params["jobName"], params["customModelName"]
        if any(job.job_name == name for job in self._jobs.values()):
            raise conflict(f"A model customization job with the name {name} already exists.")
        if model_name_taken(model_name) or self.model_name_reserved(model_name):
            raise conflict(f"A custom model with the name {model_name} already exists or is being created "
                           "by a job in progress. Choose another customModelName.")
        job_id, model_id = _new_id(), _new_id()
        prefix = f"arn:aws:bedrock:{self._region}:{self._account_id}"
        job = CustomizationJob(
            job_id=job_id,
            job_arn=f"{prefix}:model-customization-job/{model.model_id}/{job_id}",
            job_name=name,
            base_model=model,
            customization_type=kind,
            role_arn=params["roleArn"],
            client_request_token=params.get("clientRequestToken"),
            output_model_name=model_name,
            output_model_arn=f"{prefix}:custom-model/{model.model_id}/{model_id}",
            hyper_parameters=hyper_parameters,
            training_data_config=params["trainingDataConfig"],
            validation_data_config=params.get("validationDataConfig"),
            output_data_config=params["outputDataConfig"],
            faults=faults,
            vpc_config=params.get("vpcConfig"),
            custom_model_kms_key_id=params.get("customModelKmsKeyId"),
            job_tags=params.get("jobTags") or [],
            custom_model_tags=params.get("customModelTags") or [],
        )
        job.stages["validationDetails"].set("InProgress")
        self._jobs[job_id] = job
        return job

    def get(self, identifier: str) -> CustomizationJob:
        """A job by ARN, id or name."""
        job = self._jobs.get(identifier.rsplit("/", 1)[-1])
        job = job or next((j for j in self._jobs.values() if j.job_name == identifier), None)
        if job is None:
            raise not_found(f"The model customization job {identifier} was not found.")
        return job

    def list(self, params: dict[str, Any]) -> tuple[list[CustomizationJob], str | None]:
        """One page of jobs matching the ListModelCustomizationJobs filters, and the next token."""
        jobs = [job for job in self._jobs.values() if _matches(job, params)]
        jobs.sort(key=lambda job: (job.creation_time, job.job_id),
                  reverse=params.get("sortOrder", "Descending") == "Descending")
        return page(jobs, params, default_size=100)

    def all(self) -> list[CustomizationJob]:
        return list(self._jobs.values())

    def clear(self) -> None:
        self._jobs.clear()

    def to_records(self) -> list[dict[str, Any]]:
        return [job.to_record() for job in self._jobs.values()]

    def load_records(self, records: list[dict[str, Any]]) -> list[CustomizationJob]:
        """Restore saved jobs; a record that cannot be read back is logged and left out."""
        loaded = []
        for record in records:
            try:
                job = CustomizationJob.from_record(record)
            except (KeyError, TypeError, ValueError, catalogue.UnknownModel) as exc:
                log.warning("customization_job_not_restored", job_id=record.get("job_id"), error=repr(exc))
                continue
            self._jobs[job.job_id] = job
            loaded.append(job)
        return loaded


def _matches(job: CustomizationJob, params: dict[str, Any]) -> bool:
    if "statusEquals" in params and job.status != params["statusEquals"]:
        return False
    if "nameContains" in params and params["nameContains"] not in job.job_name:
        return False
    if "creationTimeAfter" in params and job.creation_time <= aware(params["creationTimeAfter"]):
        return False
    if "creationTimeBefore" in params and job.creation_time >= aware(params["creationTimeBefore"]):
        return False
    return True


# --- data validation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    """The job's data, checked and copied under the service's home."""

    train_path: Path
    train_records: int
    validation_path: Path | None
    validation_records: int


class DataChecker:
    """Reads a job's training and validation data from S3 as Bedrock's validation does, failing the
    job on the first bad record with a message that names the file and line."""

    def __init__(self, settings: Settings, s3: Any) -> None:
        self._limits = settings.customization
        self._s3 = s3

    async def check(self, job: CustomizationJob, work_dir: Path) -> TrainingData:
        kind = job.customization_type
        train_path = work_dir / "train.jsonl"
        train_files = await self._files(job.training_uri, "training")
        train_count = await self._copy(job, train_files, train_path, "training")
        if train_count < self._limits.min_training_records:
            raise JobFailure(f"The training data at {job.training_uri} has {train_count} records, fewer than the "
                             f"minimum of {self._limits.min_training_records}. Add records and create the job again.")
        validation_path, validation_count = None, 0
        if job.validation_uris:
            validation_path = work_dir / "validation.jsonl"
            files = [file for uri in job.validation_uris for file in await self._files(uri, "validation")]
            validation_count = await self._copy(job, files, validation_path, "validation")
            if validation_count > self._limits.max_validation_records:
                raise JobFailure(f"The validation data has {validation_count} records, more than the maximum of "
                                 f"{self._limits.max_validation_records} validation records.")
        maximum = (self._limits.max_pre_training_records if kind == "CONTINUED_PRE_TRAINING"
                   else self._limits.max_fine_tuning_records)
        if train_count + validation_count > maximum:
            raise JobFailure(f"The job has {train_count + validation_count} training and validation records, more "
                             f"than the maximum of {maximum} for {kind} of {job.base_model.model_id}.")
        await self._check_output_bucket(job)
        return TrainingData(train_path, train_count, validation_path, validation_count)

    async def _files(self, uri: str, role: str) -> list[InputFile]:
        """The JSONL files an s3Uri names: the object itself, or every .jsonl under the prefix."""
        bucket, key = s3io.split_uri(uri)
        try:
            if key and not key.endswith("/"):
                try:
                    head = await self._s3.head_object(Bucket=bucket, Key=key)
                    return [InputFile(bucket, key, head["ContentLength"])]
                except ClientError as exc:
                    if _status(exc) != 404:
                        raise
            prefix = key.rstrip("/") + "/" if key else ""
            files = []
            async for listing in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                files += [InputFile(bucket, item["Key"], item["Size"]) for item in listing.get("Contents", [])
                          if item["Key"].lower().endswith(".jsonl")]
        except ClientError as exc:
            raise JobFailure(f"Could not read the {role} data at {uri}: the bucket {bucket} does not exist or "
                             f"cannot be read ({_status(exc)}).") from None
        if not files:
            raise JobFailure(f"No {role} data was found at {uri}: it names no object and no .jsonl file under it.")
        return sorted(files, key=lambda f: f.key)

    async def _copy(self, job: CustomizationJob, files: list[InputFile], target: Path, role: str) -> int:
        """Check every record of `files` and write them to `target`; the number of records."""
        limit = self._limits.max_record_tokens.get(job.base_model.family)
        count = 0
        with target.open("wb") as out:
            for file in files:
                in_file = 0
                async for number, line in s3io.lines(self._s3, file):
                    record = check_record(line, number, file.uri, job.customization_type)
                    tokens = sum(count_tokens(value) for value in record.values())
                    if limit is not None and tokens > limit:
                        raise JobFailure(f"Line {number} of {file.uri}: the record has about {tokens} tokens (the "
                                         f"local Bedrock's estimate), over the limit of {limit} tokens per record "
                                         f"for {job.base_model.model_id}. Shorten or split the record.")
                    out.write(orjson.dumps(record) + b"\n")
                    in_file += 1
                if in_file == 0:
                    raise JobFailure(f"The {role} data file {file.uri} is empty: it has no records.")
                count += in_file
        return count

    async def _check_output_bucket(self, job: CustomizationJob) -> None:
        bucket, _ = s3io.split_uri(job.output_data_config["s3Uri"])
        try:
            await self._s3.head_bucket(Bucket=bucket)
        except ClientError:
            raise JobFailure(f"The output S3 bucket {bucket} does not exist or cannot be written. Create it, or fix "
                             "outputDataConfig.s3Uri.") from None


def check_record(line: bytes, number: int, uri: str, kind: str) -> dict[str, str]:
    """One training record, checked for the customization type's shape: exactly its fields, each
    a non-empty string."""
    fields = RECORD_FIELDS[kind]
    example = ", ".join(f'"{name}": "..."' for name in fields)
    shape = f"Each line of {kind} data must be one JSON object: {{{example}}}."
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise JobFailure(f"Line {number} of {uri} is not valid JSON ({exc}). {shape}") from None
    if not isinstance(record, dict):
        raise JobFailure(f"Line {number} of {uri} is not a JSON object. {shape}")
    for name in fields:
        if name not in record:
            raise JobFailure(f"Line {number} of {uri} has no \"{name}\" field. {shape}")
        if not isinstance(record[name], str):
            raise JobFailure(f"Line {number} of {uri}: \"{name}\" must be a string. {shape}")
        if not record[name].strip():
            raise JobFailure(f"Line {number} of {uri}: \"{name}\" is empty. {shape}")
    extra = sorted(set(record) - set(fields))
    if extra:
        raise JobFailure(f"Line {number} of {uri} has the field \"{extra[0]}\", which {kind} records do not take. {shape}")
    return {name: record[name] for name in fields}


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


# --- metrics --------------------------------------------------------------------------------------------
class MetricsFiles:
    """The job's metrics CSVs under its output prefix, rewritten whole as rows are added (they are small)."""

    TRAINING = "training_artifacts/step_wise_training_metrics.csv"
    VALIDATION = "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"

    def __init__(self, s3: Any, job: CustomizationJob) -> None:
        self._s3 = s3
        self._prefix = job.output_prefix
        self._training: list[str] = []
        self._validation: list[str] = []
        self._dirty = False

    def add_step(self, step: TrainingStep) -> None:
        self._training.append(f"{step.step_number},{step.epoch_number},{step.training_loss},{step.perplexity}")
        self._dirty = True

    def add_validation(self, result: ValidationResult) -> None:
        self._validation.append(f"{result.step_number},{result.epoch_number},{result.validation_loss},{result.perplexity}")
        self._dirty = True

    async def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        await s3io.put(self._s3, self._prefix + self.TRAINING,
                       _csv("step_number,epoch_number,training_loss,perplexity", self._training))
        if self._validation:
            await s3io.put(self._s3, self._prefix + self.VALIDATION,
                           _csv("step_number,epoch_number,validation_loss,perplexity", self._validation))


def _csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


# --- the lifecycle ----------------------------------------------------------------------------------------
class CustomizationRunner:
    """Runs every customization job's lifecycle in the background."""

    def __init__(self, settings: Settings, *, s3: Any, events: Any, state: StateDir, custom_models: CustomModelStore,
                 save: Callable[[], None]) -> None:
        self._settings = settings
        self._s3 = s3
        self._events = events
        self._state = state
        self._models = custom_models
        self._save = save
        self._tasks = JobTasks()

    async def start(self, job: CustomizationJob) -> None:
        """Announce the new job and start its lifecycle."""
        self._save()
        await self._events.customization_job_changed(job)
        self._launch(job)

    async def resume(self, job: CustomizationJob) -> None:
        """Carry on a job that had not ended when the service last stopped: from the start, since
        neither its data copies nor a trainer's progress are kept across a restart."""
        if job.status == "Stopping":
            job.current_stage().set("Stopped")
            await self._set(job, "Stopped")
            return
        log.info("customization_job_resumed", job_id=job.job_id, job_name=job.job_name)
        job.stages = {name: Stage() for name in STAGES}
        job.stages["validationDetails"].set("InProgress")
        job.training_loss = job.validation_loss = None
        self._save()
        self._launch(job)

    async def stop(self, job: CustomizationJob) -> None:
        """Move an InProgress job to Stopping; its task stops training and ends it Stopped."""
        job.stop_requested = True
        job.current_stage().set("Stopping")
        await self._set(job, "Stopping")
        self._tasks.request_stop(job.job_id)

    async def close(self) -> None:
        await self._tasks.close()

    def _launch(self, job: CustomizationJob) -> None:
        self._tasks.launch(job.job_id, self._run(job), name=f"customization-{job.job_id}")

    async def _run(self, job: CustomizationJob) -> None:
        bound = log.bind(job_id=job.job_id, job_name=job.job_name, base_model_id=job.base_model.model_id)
        work_dir = self._state.area("customization-jobs", job.job_id)
        weights_dir = self._state.home / "custom-models" / job.custom_model_id
        try:
            data = await DataChecker(self._settings, self._s3).check(job, work_dir)
            bound.info("customization_data_checked", train_records=data.train_records,
                       validation_records=data.validation_records)
            await self._tasks.pause(job.job_id, self._settings.customization.validation_seconds)
            await self._next_stage(job, "validationDetails", "dataProcessingDetails")
            await self._tasks.pause(job.job_id, self._settings.customization.data_processing_seconds)
            await self._next_stage(job, "dataProcessingDetails", "trainingDetails")
            trainer, done = await self._train(job, data, weights_dir)
            self._add_custom_model(job, trainer, weights_dir, done)
            job.stages["trainingDetails"].set("Completed")
            await self._set(job, "Completed")
        except JobStopped:
            job.current_stage().set("Stopped")
            await self._set(job, "Stopped")
        except JobFailure as failure:
            bound.info("customization_job_failed", reason=str(failure))
            job.current_stage().set("Failed")
            await self._set(job, "Failed", str(failure))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the service must never leave a job hanging on a bug
            bound.exception("customization_job_crashed")
            job.current_stage().set("Failed")
            await self._set(job, "Failed", f"Internal error while running the job: {type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
            if job.status != "Completed":
                shutil.rmtree(weights_dir, ignore_errors=True)
        bound.info("customization_job_ended", status=job.status, training_loss=job.training_loss)

    async def _train(self, job: CustomizationJob, data: TrainingData, weights_dir: Path) -> tuple[Trainer, TrainingDone]:
        trainer = self._trainer(job.base_model)
        arguments = hyperparameters.training_arguments(job.hyper_parameters)
        spec = TrainingSpec(
            job_id=job.job_id, customization_type=job.customization_type,  # type: ignore[arg-type]
            base_model_id=job.base_model.model_id, train_path=data.train_path,
            validation_path=data.validation_path, output_dir=weights_dir, epochs=arguments.epochs,
            batch_size=arguments.batch_size, learning_rate=arguments.learning_rate,
            warmup_steps=arguments.warmup_steps, faults=job.faults,
        )
        metrics = MetricsFiles(self._s3, job)
        try:
            async with contextlib.aclosing(self._events_until_stopped(job, trainer.train(spec))) as events:
                async for event in events:
                    if isinstance(event, TrainingStep):
                        metrics.add_step(event)
                        job.training_loss = event.training_loss
                        done = event.step_number + 1
                        if done % max(self._settings.customization.metrics_every_steps, event.total_steps // 100) == 0:
                            await metrics.flush()
                        await self._apply_faults(job, done, event.total_steps)
                    elif isinstance(event, ValidationResult):
                        metrics.add_validation(event)
                        job.validation_loss = event.validation_loss
                    elif isinstance(event, TrainingDone):
                        job.training_loss = event.training_loss
                        if event.validation_loss is not None:
                            job.validation_loss = event.validation_loss
                        return trainer, event
        except TrainingFailed as failure:
            raise JobFailure(str(failure) or "Training failed.") from None
        finally:
            with contextlib.suppress(JobFailure):
                await metrics.flush()
        raise JobFailure("Training ended without producing a model (the trainer stopped early).")

    async def _events_until_stopped(self, job: CustomizationJob, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The trainer's events until it is done or the job is stopped; a stop cancels the step in
        flight and closes the trainer (see training.py)."""
        stopped = asyncio.ensure_future(self._tasks.wait_for_stop(job.job_id))
        try:
            while True:
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    with contextlib.suppress(BaseException):
                        await step
                    raise JobStopped
                try:
                    event = step.result()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            stopped.cancel()
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    async def _apply_faults(self, job: CustomizationJob, done: int, total: int) -> None:
        """End the job part-way when a fault says so (the runner enforces these, not the trainer)."""
        faults = job.faults
        if faults.fail_after_fraction is not None and done >= math.ceil(faults.fail_after_fraction * total):
            raise JobFailure(faults.failure_message or "The training job failed with an internal error (injected fault).")
        if faults.stop_after_fraction is not None and done >= math.ceil(faults.stop_after_fraction * total):
            await self.stop(job)
            raise JobStopped

    def _trainer(self, model: FoundationModel) -> Trainer:
        if self._settings.engine_for(model.model_id) == "fast":
            from infra.local_bedrock.engines.fast_training import FastTrainer

            return FastTrainer(seconds_per_step=self._settings.customization.seconds_per_step)
        try:
            from infra.local_bedrock.engines.real_training import RealTrainer
        except ImportError as exc:
            raise JobFailure(f"The real engine cannot train: {exc.name} is missing (run `make install-real`).") from None
        return RealTrainer()

    def _add_custom_model(self, job: CustomizationJob, trainer: Trainer, weights_dir: Path, done: TrainingDone) -> None:
        model = CustomModel(
            model_arn=job.output_model_arn,
            model_name=job.output_model_name,
            job_arn=job.job_arn,
            job_name=job.job_name,
            base_model=job.base_model,
            customization_type=job.customization_type,
            engine=trainer.name,
            weights_dir=weights_dir,
            creation_time=utcnow(),
            hyper_parameters=job.hyper_parameters,
            training_data_config=job.training_data_config,
            output_data_config=job.output_data_config,
            validation_data_config=job.validation_data_config,
            training_metrics={"trainingLoss": done.training_loss},
            validation_metrics=[{"validationLoss": done.validation_loss}] if done.validation_loss is not None else None,
            tags=job.custom_model_tags,
        )
        self._models.add(model)

    async def _next_stage(self, job: CustomizationJob, finished: str, starting: str) -> None:
        job.stages[finished].set("Completed")
        job.stages[starting].set("InProgress")
        job.last_modified_time = utcnow()
        self._save()

    async def _set(self, job: CustomizationJob, status: str, message: str | None = None) -> None:
        if job.status == status:
            return
        job.set_status(status, message)
        log.info("customization_job_status_changed", job_id=job.job_id, status=status)
        self._save()
        await self._events.customization_job_changed(job)
