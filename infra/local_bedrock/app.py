"""The HTTP face of the local Bedrock: Bedrock's REST routes (`bedrock` and `bedrock-runtime` on
one port) plus its own control endpoint, /local-bedrock-api/, for faults and resets."""
from __future__ import annotations

import contextlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import unquote

import orjson
import structlog
from aiobotocore.session import get_session
from aiohttp import web
from botocore.config import Config
from pydantic import ValidationError

from infra.local_bedrock import catalogue, protocol
from infra.local_bedrock.batch import BatchRunner
from infra.local_bedrock.coalesce import Coalescer
from infra.local_bedrock.custom_models import CustomModel, CustomModelStore
from infra.local_bedrock.customization import TERMINAL as CUSTOMIZATION_TERMINAL
from infra.local_bedrock.customization import CustomizationJobStore, CustomizationRunner, base_model_for, checked_request
from infra.local_bedrock.errors import BedrockError, conflict, not_found, throttled, validation
from infra.local_bedrock.events import EventPublisher
from infra.local_bedrock.faults import (
    FaultRegistry, FaultSpec, for_new_customization, take_customization_throttle, wrong_answer_rate,
)
from infra.local_bedrock.hosting import Hosting
from infra.local_bedrock.inference import Engines, Outcome, WrongAnswers, invoke_many
from infra.local_bedrock.jobs import TERMINAL, JobStore
from infra.local_bedrock.persistence import StateDir
from infra.local_bedrock.settings import Settings

log = structlog.get_logger("local_bedrock.app")

# Names of the documents the service's state is saved under (persistence.StateDir).
BATCH_JOBS_STATE, CUSTOMIZATION_JOBS_STATE, CUSTOM_MODELS_STATE = "batch_jobs", "customization_jobs", "custom_models"

SERVICE: web.AppKey["LocalBedrock"] = web.AppKey("service")

class LocalBedrock:
    """The service's state and operations; the routes below only translate HTTP to and from it."""

    def __init__(self, settings: Settings, *, s3: Any, events: Any) -> None:
        self.settings = settings
        self.faults = FaultRegistry()
        self.state = StateDir(settings.home)
        self.custom_models = CustomModelStore(region=settings.region, account_id=settings.account_id)
        self.custom_models.load_records(self.state.load(CUSTOM_MODELS_STATE))
        self.jobs = JobStore(region=settings.region, account_id=settings.account_id,
                             max_active_per_model=settings.limits.max_active_jobs_per_model)
        self.jobs.load_records(self.state.load(BATCH_JOBS_STATE))
        self.customization_jobs = CustomizationJobStore(region=settings.region, account_id=settings.account_id)
        self.customization_jobs.load_records(self.state.load(CUSTOMIZATION_JOBS_STATE))
        self.hosting = Hosting(settings, custom_models=self.custom_models, faults=self.faults, state=self.state)
        self.engines = Engines(settings)
        self.executor = ThreadPoolExecutor(max_workers=settings.running_jobs, thread_name_prefix="engine")
        # Concurrent runtime calls of one model are generated together, a job's mini-batch at most.
        self.invocations: Coalescer[Outcome] = Coalescer(self.executor, max_batch=settings.batch_size)
        publisher = EventPublisher(events, bus=settings.event_bus, account_id=settings.account_id,
                                   region=settings.region)
        self.runner = BatchRunner(settings, engines=self.engines, s3=s3, events=publisher, executor=self.executor,
                                  on_change=self._save_batch_jobs)
        self.customizer = CustomizationRunner(settings, s3=s3, events=publisher, state=self.state,
                                              custom_models=self.custom_models, save=self._save_customization)

    async def restore(self) -> None:
        """Carry on the jobs that had not ended when the service last stopped (state under its home)."""
        for job in self.jobs.all():
            if job.status not in TERMINAL:
                await self.runner.resume(job)
        for customization_job in self.customization_jobs.all():
            if customization_job.status not in CUSTOMIZATION_TERMINAL:
                await self.customizer.resume(customization_job)

    def _save_batch_jobs(self) -> None:
        self.state.save(BATCH_JOBS_STATE, self.jobs.to_records())

    def _save_customization(self) -> None:
        self.state.save(CUSTOMIZATION_JOBS_STATE, self.customization_jobs.to_records())
        self.state.save(CUSTOM_MODELS_STATE, self.custom_models.to_records())

    # --- control plane: batch jobs -------------------------------------------------------------
    async def create_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        existing = self.jobs.by_token(params.get("clientRequestToken"))
        if existing is not None:
            # Idempotency: the same token always answers with the job it first created.
            return {"jobArn": existing.job_arn}
        if self.hosting.is_provisioned_model(params["modelId"]):
            raise validation("Batch inference isn't supported for provisioned models.")
        model = _model(params["modelId"])
        if self.faults.take_throttle(model.model_id, params["jobName"]):
            raise throttled("Too many requests, please wait before trying again. (injected fault)")
        job = self.jobs.create(params=params, model=model,
                               faults=self.faults.for_new_job(model_id=model.model_id, job_name=params["jobName"]))
        log.info("job_created", job_id=job.job_id, job_name=job.job_name, model_id=model.model_id)
        await self.runner.start(job)
        return {"jobArn": job.job_arn}

    async def get_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.jobs.get(params["jobIdentifier"]).describe(self.settings.delays.seconds_per_hour)

    async def list_jobs(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        page, token = self.jobs.list(params)
        body: dict[str, Any] = {"invocationJobSummaries": [j.describe(self.settings.delays.seconds_per_hour) for j in page]}
        if token:
            body["nextToken"] = token
        return body

    async def stop_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        job = self.jobs.get(params["jobIdentifier"])
        if job.status in TERMINAL or job.status == "Stopping":
            raise conflict(f"The job {job.job_arn} is {job.status} and cannot be stopped.")
        await self.runner.stop(job)
        return {}

    # --- control plane: models -------------------------------------------------------------------
    async def list_models(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        models = [m for m in catalogue.MODELS if _model_matches(m, params)]
        return {"modelSummaries": [_model_summary(m, self.settings.region) for m in models]}

    async def get_model(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        try:
            model = catalogue.resolve(params["modelIdentifier"])
        except catalogue.UnknownModel:
            raise not_found(f"The model {params['modelIdentifier']} was not found.") from None
        return {"modelDetails": _model_summary(model, self.settings.region)}

    # --- control plane: provisioned throughput and deployments ----------------------------------
    async def create_provisioned(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.create_provisioned(params)

    async def get_provisioned(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.get_provisioned(params["provisionedModelId"])

    async def list_provisioned(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.list_provisioned(params)

    async def update_provisioned(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.update_provisioned(params)

    async def delete_provisioned(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.delete_provisioned(params["provisionedModelId"])

    async def create_deployment(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.create_deployment(params)

    async def get_deployment(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.get_deployment(params["customModelDeploymentIdentifier"])

    async def list_deployments(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.list_deployments(params)

    async def delete_deployment(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.hosting.delete_deployment(params["customModelDeploymentIdentifier"])

    # --- control plane: customization jobs and custom models ------------------------------------
    async def create_customization_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        existing = self.customization_jobs.by_token(params.get("clientRequestToken"))
        if existing is not None:
            return {"jobArn": existing.job_arn}
        model = base_model_for(params["baseModelIdentifier"])
        kind, hyper_parameters = checked_request(params, model)
        if take_customization_throttle(self.faults, model_id=model.model_id, job_name=params["jobName"]):
            raise throttled("Too many requests, please wait before trying again. (injected fault)")
        job = self.customization_jobs.create(
            params, model=model, kind=kind, hyper_parameters=hyper_parameters,
            faults=for_new_customization(self.faults, model_id=model.model_id, job_name=params["jobName"]),
            model_name_taken=self.custom_models.name_taken)
        log.info("customization_job_created", job_id=job.job_id, job_name=job.job_name, base_model_id=model.model_id)
        await self.customizer.start(job)
        return {"jobArn": job.job_arn}

    async def get_customization_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.customization_jobs.get(params["jobIdentifier"]).describe(self.settings.region)

    async def list_customization_jobs(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        page, token = self.customization_jobs.list(params)
        body: dict[str, Any] = {"modelCustomizationJobSummaries": [j.summary(self.settings.region) for j in page]}
        return {**body, "nextToken": token} if token else body

    async def stop_customization_job(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        job = self.customization_jobs.get(params["jobIdentifier"])
        if job.status != "InProgress":
            raise conflict(f"The job {job.job_arn} is {job.status}; only a job InProgress can be stopped.")
        await self.customizer.stop(job)
        return {}

    async def get_custom_model(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return self.custom_models.get(params["modelIdentifier"]).describe(self.settings.region)

    async def list_custom_models(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        page, token = self.custom_models.list(params)
        body: dict[str, Any] = {"modelSummaries": [m.summary(self.settings.region, self.settings.account_id) for m in page]}
        return {**body, "nextToken": token} if token else body

    async def delete_custom_model(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        model = self.custom_models.get(params["modelIdentifier"])
        self._ensure_custom_model_unused(model)
        self.custom_models.delete(model.model_id)
        self.engines.forget_custom(model.model_id)
        shutil.rmtree(model.weights_dir, ignore_errors=True)
        self._save_customization()
        log.info("custom_model_deleted", model_id=model.model_id)
        return {}

    def _ensure_custom_model_unused(self, model: CustomModel) -> None:
        """Hook: Bedrock refuses to delete a custom model that a provisioned throughput or a
        deployment serves (ConflictException); hosting decides."""
        self.hosting.ensure_custom_model_unused(model)

    # --- runtime ---------------------------------------------------------------------------------
    async def invoke(self, request: web.Request, params: dict[str, Any]) -> web.Response:
        model, custom = self._serving(params["modelId"])
        try:
            body = orjson.loads(params.get("body") or b"")
        except orjson.JSONDecodeError:
            raise validation("Malformed input request: the body is not valid JSON, please reformat your input and try again.") from None
        outcome = await self._invoke_one(model, body, converse=False, custom=custom, model_id=params["modelId"])
        return web.Response(body=orjson.dumps(outcome), content_type="application/json")

    async def converse(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        model, custom = self._serving(params["modelId"])
        body = {k: v for k, v in params.items() if k in ("messages", "system", "inferenceConfig", "additionalModelRequestFields")}
        return await self._invoke_one(model, body, converse=True, custom=custom, model_id=params["modelId"])

    def _serving(self, model_id: str) -> tuple[catalogue.FoundationModel, CustomModel | None]:
        """The family a runtime modelId is answered in and the custom weights behind it, if any:
        a PT or deployment ARN serves what it hosts; anything else names a foundation model."""
        target = self.hosting.serving_target(model_id)
        return (target.model, target.custom) if target is not None else (_model(model_id), None)

    async def _invoke_one(self, model: catalogue.FoundationModel, body: Any, *, converse: bool,
                          custom: CustomModel | None = None, model_id: str | None = None) -> dict[str, Any]:
        # A wrong-answer fault is scoped as batch jobs are (the foundation model an id resolves to),
        # except that a PT or deployment of a custom model is scoped by the ARN the caller named.
        named = model_id if custom is not None and model_id else model.model_id
        rate = wrong_answer_rate(self.faults, model_id=named)
        wrong = WrongAnswers(rate, named) if rate > 0 else None
        key = (model.model_id, custom.model_arn if custom is not None else None, converse, wrong)
        outcome = await self.invocations.call(
            key, partial(invoke_many, self.engines, model, converse=converse, custom=custom, wrong=wrong), body)
        if outcome.error is not None:
            raise outcome.error
        return outcome.response

    # --- control endpoint ------------------------------------------------------------------------
    async def add_fault(self, request: web.Request) -> web.Response:
        try:
            spec = FaultSpec.model_validate_json(await request.read())
        except ValidationError as exc:
            return web.json_response({"message": f"invalid fault: {exc}"}, status=400)
        fault = self.faults.add(spec)
        log.info("fault_added", fault_id=fault.fault_id, spec=spec.model_dump(exclude_none=True))
        return web.Response(body=fault.model_dump_json(), content_type="application/json", status=201)

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"faults": [f.model_dump(mode="json") for f in self.faults.all()]})

    async def remove_fault(self, request: web.Request) -> web.Response:
        fault_id = request.match_info.get("fault_id")
        if fault_id is None:
            self.faults.clear()
            return web.json_response({"removed": "all"})
        if not self.faults.remove(fault_id):
            return web.json_response({"message": f"no fault {fault_id}"}, status=404)
        return web.json_response({"removed": fault_id})

    async def reset(self, request: web.Request) -> web.Response:
        """Forget every job and fault (tests call this between cases)."""
        await self.runner.close()
        await self.customizer.close()
        self.jobs.clear()
        self.faults.clear()
        self.customization_jobs.clear()
        for model in self.custom_models.all():
            self.engines.forget_custom(model.model_id)
        self.custom_models.clear()
        self._save_batch_jobs()
        self._save_customization()
        self.state.clear_areas("customization-jobs", "custom-models")
        self.hosting.clear()
        return web.json_response({"reset": True})

    async def prices(self, request: web.Request) -> web.Response:
        """Provisioned Throughput prices per model unit-hour, and what the PTs that exist cost."""
        return web.json_response(self.hosting.prices())

    async def health(self, request: web.Request) -> web.Response:
        jobs = self.jobs.all()
        return web.json_response({
            "status": "ok",
            "engine": self.settings.engine,
            "engineMap": self.settings.engine_map,
            "jobs": {status: sum(1 for j in jobs if j.status == status) for status in {j.status for j in jobs}},
            "customizationJobs": _count(job.status for job in self.customization_jobs.all()),
            "customModels": len(self.custom_models.all()),
            **self.hosting.counts(),
            "hostingCreated": self.hosting.created(),
            "provisionedHourlyCost": self.hosting.prices()["totalHourly"],
        })


def _count(statuses) -> dict[str, int]:
    counted: dict[str, int] = {}
    for status in statuses:
        counted[status] = counted.get(status, 0) + 1
    return counted


def _model(identifier: str) -> catalogue.FoundationModel:
    try:
        return catalogue.resolve(identifier)
    except catalogue.UnknownModel:
        raise validation(f"The provided model identifier is invalid: {identifier}. "
                         "ListFoundationModels shows the models this service serves.") from None


def _model_matches(model: catalogue.FoundationModel, params: dict[str, Any]) -> bool:
    if "byProvider" in params and params["byProvider"].lower() != model.provider.lower():
        return False
    if "byOutputModality" in params and params["byOutputModality"] != model.output_modality:
        return False
    if "byCustomizationType" in params and params["byCustomizationType"] not in model.customizations:
        return False
    return params.get("byInferenceType") in (None, *_inference_types(model))


def _inference_types(model: catalogue.FoundationModel) -> list[str]:
    return ["ON_DEMAND", "PROVISIONED"] if model.provisionable else ["ON_DEMAND"]


def _model_summary(model: catalogue.FoundationModel, region: str) -> dict[str, Any]:
    return {
        "modelArn": model.arn(region),
        "modelId": model.model_id,
        "modelName": model.name,
        "providerName": model.provider,
        "inputModalities": ["TEXT"],
        "outputModalities": [model.output_modality],
        "responseStreamingSupported": not model.is_embedding,
        "customizationsSupported": list(model.customizations),
        "inferenceTypesSupported": _inference_types(model),
        "modelLifecycle": {"status": model.lifecycle},
    }


# --- routing ----------------------------------------------------------------------------------------
def _route(service: str, operation_name: str, method: str):
    """An aiohttp handler that parses and validates the operation's input, calls the service's
    method of that name, and serialises the result or the error."""
    operation = protocol.operation(service, operation_name)

    async def handle(request: web.Request) -> web.Response:
        started = time.monotonic()
        handler = getattr(request.app[SERVICE], method)
        try:
            params = protocol.parse_request(
                operation,
                path_params={k: unquote(v) for k, v in request.match_info.items()},
                query=request.query,
                headers=request.headers,
                body=await request.read(),
            )
            result = await handler(request, params)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the caller as a Bedrock error
            error = exc if isinstance(exc, BedrockError) else _internal(operation_name, exc)
            status, headers, body = protocol.error_body(error)
            log.info("request_rejected", operation=operation_name, code=error.code, message=error.message)
            return web.Response(status=status, headers=headers, body=body, content_type="application/json")
        if isinstance(result, web.Response):
            return result
        log.debug("request_served", operation=operation_name, ms=int((time.monotonic() - started) * 1000))
        return web.Response(body=protocol.to_json(result), content_type="application/json",
                            status=operation.http.get("responseCode", 200))

    return handle


def _internal(operation_name: str, exc: Exception) -> BedrockError:
    log.exception("request_failed", operation=operation_name)
    return BedrockError("InternalServerException", f"{type(exc).__name__}: {exc}")


def _control(method: str):
    """A control-endpoint handler bound to the service at request time."""

    async def handle(request: web.Request) -> web.Response:
        return await getattr(request.app[SERVICE], method)(request)

    return handle


async def _unknown_route(request: web.Request) -> web.Response:
    error = BedrockError("UnknownOperationException", f"No operation at {request.method} {request.path}")
    status, headers, body = protocol.error_body(error)
    return web.Response(status=status, headers=headers, body=body, content_type="application/json")


def build_app(settings: Settings) -> web.Application:
    """The aiohttp application; its clients and background tasks live as long as it does."""
    app = web.Application(client_max_size=30 * 1024 * 1024)
    _add_routes(app)
    app.cleanup_ctx.append(lambda app: _lifecycle(app, settings))
    return app


async def _lifecycle(app: web.Application, settings: Settings):
    session = get_session()
    # Checksums only where S3 requires them, and bodies not SHA-256 signed (botocore signs every
    # body over plain HTTP): a CRC32 or SHA-256 of every output byte, computed here (and the CRC
    # again by moto), is work neither needs on loopback.
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, region_name=settings.region,
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    s3={"payload_signing_enabled": False})
    async with contextlib.AsyncExitStack() as stack:
        s3 = await stack.enter_async_context(session.create_client("s3", config=config))
        events = await stack.enter_async_context(session.create_client("events", config=config))
        service = LocalBedrock(settings, s3=s3, events=events)
        app[SERVICE] = service
        await service.restore()
        yield
        await service.runner.close()
        await service.customizer.close()
        service.executor.shutdown(wait=False, cancel_futures=True)


def _add_routes(app: web.Application) -> None:
    # Path parameters use `.+` because ARNs arrive percent-encoded and may decode to contain '/'.
    add = app.router.add_route
    add("POST", "/model-invocation-job", _route("bedrock", "CreateModelInvocationJob", "create_job"))
    add("GET", "/model-invocation-jobs", _route("bedrock", "ListModelInvocationJobs", "list_jobs"))
    add("POST", "/model-invocation-job/{jobIdentifier:.+}/stop", _route("bedrock", "StopModelInvocationJob", "stop_job"))
    add("GET", "/model-invocation-job/{jobIdentifier:.+}", _route("bedrock", "GetModelInvocationJob", "get_job"))
    add("GET", "/foundation-models", _route("bedrock", "ListFoundationModels", "list_models"))
    add("GET", "/foundation-models/{modelIdentifier:.+}", _route("bedrock", "GetFoundationModel", "get_model"))
    add("POST", "/provisioned-model-throughput", _route("bedrock", "CreateProvisionedModelThroughput", "create_provisioned"))
    add("GET", "/provisioned-model-throughputs", _route("bedrock", "ListProvisionedModelThroughputs", "list_provisioned"))
    add("GET", "/provisioned-model-throughput/{provisionedModelId:.+}", _route("bedrock", "GetProvisionedModelThroughput", "get_provisioned"))
    add("PATCH", "/provisioned-model-throughput/{provisionedModelId:.+}", _route("bedrock", "UpdateProvisionedModelThroughput", "update_provisioned"))
    add("DELETE", "/provisioned-model-throughput/{provisionedModelId:.+}", _route("bedrock", "DeleteProvisionedModelThroughput", "delete_provisioned"))
    add("POST", "/model-customization/custom-model-deployments", _route("bedrock", "CreateCustomModelDeployment", "create_deployment"))
    add("GET", "/model-customization/custom-model-deployments", _route("bedrock", "ListCustomModelDeployments", "list_deployments"))
    add("GET", "/model-customization/custom-model-deployments/{customModelDeploymentIdentifier:.+}",
        _route("bedrock", "GetCustomModelDeployment", "get_deployment"))
    add("DELETE", "/model-customization/custom-model-deployments/{customModelDeploymentIdentifier:.+}",
        _route("bedrock", "DeleteCustomModelDeployment", "delete_deployment"))
    add("POST", "/model-customization-jobs", _route("bedrock", "CreateModelCustomizationJob", "create_customization_job"))
    add("GET", "/model-customization-jobs", _route("bedrock", "ListModelCustomizationJobs", "list_customization_jobs"))
    add("POST", "/model-customization-jobs/{jobIdentifier:.+}/stop",
        _route("bedrock", "StopModelCustomizationJob", "stop_customization_job"))
    add("GET", "/model-customization-jobs/{jobIdentifier:.+}",
        _route("bedrock", "GetModelCustomizationJob", "get_customization_job"))
    add("GET", "/custom-models", _route("bedrock", "ListCustomModels", "list_custom_models"))
    add("GET", "/custom-models/{modelIdentifier:.+}", _route("bedrock", "GetCustomModel", "get_custom_model"))
    add("DELETE", "/custom-models/{modelIdentifier:.+}", _route("bedrock", "DeleteCustomModel", "delete_custom_model"))
    add("POST", "/model/{modelId:.+}/invoke", _route("bedrock-runtime", "InvokeModel", "invoke"))
    add("POST", "/model/{modelId:.+}/converse", _route("bedrock-runtime", "Converse", "converse"))
    add("POST", "/local-bedrock-api/faults", _control("add_fault"))
    add("GET", "/local-bedrock-api/faults", _control("list_faults"))
    add("DELETE", "/local-bedrock-api/faults", _control("remove_fault"))
    add("DELETE", "/local-bedrock-api/faults/{fault_id}", _control("remove_fault"))
    add("POST", "/local-bedrock-api/reset", _control("reset"))
    add("GET", "/local-bedrock-api/health", _control("health"))
    add("GET", "/local-bedrock-api/prices", _control("prices"))
    add("*", "/{tail:.*}", _unknown_route)
