"""Bedrock's batch jobs and on-demand runtime, behind two small ports."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from shared.adapters.aws import translate
from shared.domain.runs import Job
from shared.errors import PermanentError

# Bedrock statuses that count against the per-model quota of submitted + in-progress jobs.
ACTIVE_STATUSES = ("Submitted", "Validating", "Scheduled", "InProgress", "Stopping")


@dataclass(frozen=True)
class BedrockJobState:
    arn: str
    name: str
    status: str
    message: str | None
    processed: int
    succeeded: int
    failed: int
    total: int | None


class BatchJobs:
    """Create, read, stop and count model invocation jobs."""

    def __init__(self, bedrock: Any, *, role_arn: str, timeout_hours: int) -> None:
        self._bedrock = bedrock
        self._role_arn = role_arn
        self._timeout_hours = timeout_hours

    async def create(self, job: Job) -> str:
        """The job's ARN; the deterministic token makes a repeated create return the same job."""
        try:
            response = await self._bedrock.create_model_invocation_job(
                jobName=job.name, clientRequestToken=job.client_token, roleArn=self._role_arn, modelId=job.model_id,
                inputDataConfig={"s3InputDataConfig": {"s3Uri": job.chunk_uri, "s3InputFormat": "JSONL"}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": job.output_uri}},
                timeoutDurationInHours=self._timeout_hours,
                tags=[{"key": "quarry:run", "value": job.run_id}],
            )
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"creating Bedrock job {job.name}") from exc
        return response["jobArn"]

    async def get(self, arn: str) -> BedrockJobState | None:
        """The job's state; None if Bedrock answers 404: it no longer knows the job (a restart of
        the service that made it forgot it, or it was deleted), so the job has ended."""
        try:
            job = await self._bedrock.get_model_invocation_job(jobIdentifier=arn)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise translate(exc, f"reading Bedrock job {arn}") from exc
        return BedrockJobState(
            arn=arn, name=job["jobName"], status=job["status"], message=job.get("message"),
            processed=job.get("processedRecordCount", 0), succeeded=job.get("successRecordCount", 0),
            failed=job.get("errorRecordCount", 0), total=job.get("totalRecordCount"),
        )

    async def stop(self, arn: str) -> None:
        try:
            await self._bedrock.stop_model_invocation_job(jobIdentifier=arn)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"]["Code"] == "ConflictException":
                return  # already ending or ended: stopping is done
            raise translate(exc, f"stopping Bedrock job {arn}") from exc

    async def foundation_model_ids(self) -> set[str]:
        """Ids of the foundation models Bedrock serves in this region (ListFoundationModels)."""
        try:
            response = await self._bedrock.list_foundation_models()
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "listing Bedrock's foundation models") from exc
        return {model["modelId"] for model in response.get("modelSummaries", [])}

    async def base_model(self, model_id: str) -> str:
        """The foundation model id a custom model, provisioned throughput or custom model deployment
        ARN is built on; PermanentError naming the ARN when Bedrock does not know it."""
        kind = model_id.split(":", 5)[-1].partition("/")[0] if model_id.startswith("arn:") else ""
        try:
            if kind == "provisioned-model":
                pt = await self._bedrock.get_provisioned_model_throughput(provisionedModelId=model_id)
                return pt["foundationModelArn"].rsplit("/", 1)[-1]
            if kind == "custom-model-deployment":
                deployment = await self._bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=model_id)
                return await self.base_model(deployment["modelArn"])
            if kind == "custom-model":
                model = await self._bedrock.get_custom_model(modelIdentifier=model_id)
                return model["baseModelArn"].rsplit("/", 1)[-1]
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise PermanentError(f"model {model_id!r}: Bedrock does not know it (404)") from exc
            raise translate(exc, f"reading model {model_id}") from exc
        return model_id

    async def active_job_names(self, model_id: str) -> list[str]:
        """Names of the model's submitted and in-progress jobs, Quarry's or not."""
        names: list[str] = []
        for status in ACTIVE_STATUSES:
            kwargs: dict[str, Any] = {"statusEquals": status, "maxResults": 1000}
            while True:
                try:
                    page = await self._bedrock.list_model_invocation_jobs(**kwargs)
                except (ClientError, BotoCoreError) as exc:
                    raise translate(exc, "listing Bedrock jobs") from exc
                names += [s["jobName"] for s in page["invocationJobSummaries"] if _same_model(s["modelId"], model_id)]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        return names


def _same_model(listed: str, model_id: str) -> bool:
    # Bedrock may list a job's model as an id or as an ARN ending in the id.
    return listed.rsplit("/", 1)[-1] == model_id.rsplit("/", 1)[-1]


class Runtime:
    """On-demand InvokeModel, for inputs below a job's minimum and for retries of a few records."""

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime

    async def invoke(self, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._runtime.invoke_model(modelId=model_id, body=orjson.dumps(body),
                                                        contentType="application/json", accept="application/json")
            async with response["body"] as stream:
                return orjson.loads(await stream.read())
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"invoking {model_id}") from exc
