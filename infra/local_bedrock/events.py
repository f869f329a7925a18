"""Job state change events on EventBridge, as Bedrock sends them: best-effort, never blocking a job."""
from __future__ import annotations

from typing import Any

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from infra.local_bedrock.jobs import Job

log = structlog.get_logger("local_bedrock.events")

SOURCE = "aws.bedrock"
DETAIL_TYPE = "Batch Inference Job State Change"


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


class EventPublisher:
    """Puts one event per status change on the configured bus; a failed put is logged, not raised."""

    def __init__(self, events_client: Any, *, bus: str, account_id: str, region: str) -> None:
        self._events = events_client
        self._bus = bus
        self._account_id = account_id
        self._region = region

    async def job_changed(self, job: Job) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": orjson.dumps(state_change_detail(job, self._account_id)).decode(),
            "Resources": [job.job_arn],
            "EventBusName": self._bus,
        }
        try:
            response = await self._events.put_events(Entries=[entry])
        except (ClientError, BotoCoreError, OSError) as exc:
            # Bedrock's events are best-effort too; consumers must re-check job status anyway.
            log.warning("job_event_not_published", job_id=job.job_id, status=job.status, error=str(exc))
            return
        if response.get("FailedEntryCount"):
            log.warning("job_event_rejected", job_id=job.job_id, status=job.status, entries=response.get("Entries"))
