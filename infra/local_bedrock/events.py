"""Job state change events on EventBridge, as Bedrock sends them: best-effort, never blocking a job."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from infra.local_bedrock.jobs import Job

if TYPE_CHECKING:
    from infra.local_bedrock.customization import CustomizationJob

log = structlog.get_logger("local_bedrock.events")

SOURCE = "aws.bedrock"
DETAIL_TYPE = "Batch Inference Job State Change"
CUSTOMIZATION_DETAIL_TYPE = "Model Customization Job State Change"


def state_change_detail(job: Job, account_id: str) -> dict[str, Any]:
    """The event detail with the fields AWS documents for batch inference jobs."""
    return {
        "version": "0.0",
        "accountId": account_id,
        "batchJobName": job.job_name,
        "batchJobArn": job.job_arn,
        "batchModelId": job.model_id,
        "status": job.status,
        "failureMessage": job.message if job.status == "Failed" else "",
        "creationTime": job.submit_time.isoformat().replace("+00:00", "Z"),
    }


def customization_detail(job: "CustomizationJob", region: str) -> dict[str, Any]:
    """The event detail with the fields of AWS's sample model customization event."""
    detail: dict[str, Any] = {
        "version": "0.0",
        "jobName": job.job_name,
        "jobArn": job.job_arn,
        "outputModelName": job.output_model_name,
        "roleArn": job.role_arn,
        "jobStatus": job.status,
        "failureMessage": job.failure_message if job.status == "Failed" and job.failure_message else "",
        "creationTime": _timestamp(job.creation_time),
        "lastModifiedTime": _timestamp(job.last_modified_time or job.creation_time),
        "baseModelArn": job.base_model.arn(region),
        "hyperParameters": job.hyper_parameters,
        "trainingDataConfig": job.training_data_config,
        "validationDataConfig": job.validation_data_config or {"validators": []},
        "outputDataConfig": job.output_data_config,
    }
    # The custom model exists only once the job has completed.
    if job.status == "Completed":
        detail["outputModelArn"] = job.output_model_arn
    if job.end_time is not None:
        detail["endTime"] = _timestamp(job.end_time)
    return detail


def _timestamp(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class EventPublisher:
    """Puts one event per status change on the configured bus; a failed put is logged, not raised."""

    def __init__(self, events_client: Any, *, bus: str, account_id: str, region: str) -> None:
        self._events = events_client
        self._bus = bus
        self._account_id = account_id
        self._region = region

    async def job_changed(self, job: Job) -> None:
        await self._put(job.job_id, job.status, DETAIL_TYPE, state_change_detail(job, self._account_id), job.job_arn)

    async def customization_job_changed(self, job: "CustomizationJob") -> None:
        await self._put(job.job_id, job.status, CUSTOMIZATION_DETAIL_TYPE, customization_detail(job, self._region),
                        job.job_arn)

    async def _put(self, job_id: str, status: str, detail_type: str, detail: dict[str, Any], arn: str) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type,
            "Detail": orjson.dumps(detail).decode(),
            "Resources": [arn],
            "EventBusName": self._bus,
        }
        try:
            response = await self._events.put_events(Entries=[entry])
        except (ClientError, BotoCoreError, OSError) as exc:
            # Bedrock's events are best-effort too; consumers must re-check job status anyway.
            log.warning("job_event_not_published", job_id=job_id, status=status, error=str(exc))
            return
        if response.get("FailedEntryCount"):
            log.warning("job_event_rejected", job_id=job_id, status=status, entries=response.get("Entries"))
