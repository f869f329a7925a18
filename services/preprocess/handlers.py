"""preprocess: turns a dropped file, a request event or a CLI submit into a run and its jobs."""
from __future__ import annotations

import asyncio
import uuid

import orjson
import structlog
from pydantic import ValidationError

from services.preprocess.models import ModelCatalog
from services.preprocess.staging import Staged, stage_input
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.adapters.bedrock import Runtime
from shared.crashpoints import crash_point
from shared.domain import layout
from shared.domain.access import input_refusal
from shared.domain.runs import Run
from shared.domain.spec import Profiles, SpecOverrides, resolve_spec
from shared.errors import ConflictError, InvalidRunSpec, PermanentError
from shared.messages import REQUEST_ID_MAX, BatchRequest, BatchRequested, CollectRun, RunFinished, S3ObjectCreated, StartRun, SubmitJob
from shared.ondemand import invoke_records
from shared.settings import Settings

log = structlog.get_logger("quarry.preprocess")

INCOMING = "incoming/"
SIDECAR_SUFFIX = ".spec.json"


async def object_created(event: S3ObjectCreated, *, profiles: Profiles, objects: SyncObjects, store: RunStore,
                         queues: Queues, runtime: Runtime, settings: Settings, models: ModelCatalog | None = None) -> None:
    bucket = event.detail.bucket.name
    candidates = [key for key in event.detail.object.candidate_keys() if _is_input(key)]
    if not candidates:
        log.info("object_ignored", key=event.detail.object.key)
        return
    # The same object version is one run, however many events S3 sends for it.
    version = event.detail.object.etag or event.detail.object.size
    try:
        key = await asyncio.to_thread(_existing_key, objects, bucket, candidates)
    except PermanentError as exc:
        # Only a 404 means "missing": a HEAD that is refused (403) fails the run where it can be seen.
        uri = f"s3://{bucket}/{candidates[-1]}"
        await reject(uri, f"{uri}#{version}", "s3", f"{uri} cannot be read: {exc}", store=store, queues=queues)
        return
    if key is None:
        log.info("object_ignored", key=event.detail.object.key, reason="deleted before it was read")
        return
    uri = f"s3://{bucket}/{key}"
    source_key = f"{uri}#{version}"
    try:
        profile = _profile_of(key)
        sidecar = await asyncio.to_thread(_sidecar, objects, uri)
        where = f"{uri} (profile {profile!r}" + (f", sidecar {uri}{SIDECAR_SUFFIX})" if sidecar.model_fields_set else ")")
        spec = resolve_spec(profiles.get(profile), sidecar, where=where)
    except InvalidRunSpec as exc:
        reason = str(exc) if uri in str(exc) else f"{uri}: {exc}"
        await reject(uri, source_key, "s3", reason, store=store, queues=queues)
        return
    await start_run(StartRun(run_id=run_id_of(source_key), input_uri=uri, spec=spec, origin="s3",
                             source_key=source_key),
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models)


async def batch_requested(event: BatchRequested, *, profiles: Profiles, objects: SyncObjects, store: RunStore,
                          queues: Queues, runtime: Runtime, settings: Settings, models: ModelCatalog | None = None) -> None:
    detail = event.detail
    request_id = _usable_request_id(detail)
    # Only a valid request_id keys the run: a bad one (too long for a key) is answered under the event id.
    source_key = f"event:{request_id or event.id}"
    answer_id = request_id or _echo_request_id(detail)
    where = f"the Quarry Batch Requested event {event.id} from {event.source}"
    try:
        if not isinstance(detail, dict):
            raise InvalidRunSpec(f"{where} has a detail that is a JSON {type(detail).__name__}, not an object. "
                                 f"Expected detail {_EXPECTED}")
        request = _batch_request(detail, where=where)
        profile = profiles.get(request.profile) if request.profile else None
        spec = resolve_spec(profile, request.spec, where=where)
    except InvalidRunSpec as exc:
        input_uri = str(detail.get("input_uri") or "(no input_uri in the event)") if isinstance(detail, dict) \
            else "(no input_uri in the event)"
        await reject(input_uri[:2048], source_key, "event", str(exc), store=store, queues=queues, request_id=answer_id)
        return
    earlier = await store.get_run(run_id_of(source_key))
    if earlier is not None and (earlier.input_uri, earlier.spec) != (request.input_uri, spec):
        # The same request_id for a different request: never silently ignored, never a second run.
        await reject(request.input_uri, f"{source_key}#reused:{event.id}", "event",
                     f"{where}: request_id {request_id!r} was already used by run {earlier.run_id} for "
                     f"{earlier.input_uri}; give each different request its own request_id",
                     store=store, queues=queues, request_id=request_id)
        return
    await start_run(StartRun(run_id=run_id_of(source_key), input_uri=request.input_uri, spec=spec, origin="event",
                             source_key=source_key, request_id=request_id),
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models)


async def start_run(cmd: StartRun, *, store: RunStore, queues: Queues, objects: SyncObjects, runtime: Runtime,
                    settings: Settings, models: ModelCatalog | None = None) -> None:
    run_id = await store.create_run(Run(run_id=cmd.run_id, spec=cmd.spec, input_uri=cmd.input_uri,
                                        origin=cmd.origin, source_key=cmd.source_key, request_id=cmd.request_id))
    if run_id != cmd.run_id:
        log.info("duplicate_start_ignored", source_key=cmd.source_key, existing_run_id=run_id)
        return
    run = await store.get_run(run_id)
    if run is None or run.status != "PREPARING":
        return  # a redelivery after the run moved on
    structlog.contextvars.bind_contextvars(run_id=run.run_id)
    try:
        # Whoever asked, the deployment decides what is read and which models run.
        refusal = input_refusal(run.input_uri, inputs_bucket=settings.inputs_bucket, allowed=settings.allowed_inputs)
        if refusal:
            raise InvalidRunSpec(refusal)
        if models is not None:
            await models.check(run.spec.model_id)
        staged = await asyncio.to_thread(stage_input, run, objects=objects, settings=settings)
    except PermanentError as exc:
        # Every error names the file. The reason can quote the input's structure, never its text:
        # safe at the default level.
        reason = str(exc) if run.input_uri in str(exc) else f"{run.input_uri}: {exc}"
        log.info("run_input_rejected", reason=reason)
        await _fail(run, reason, store=store, queues=queues)
        return
    latest = await store.get_run(run.run_id)
    if latest is None or latest.terminal:
        log.info("run_ended_while_staging", status=latest.status if latest else None)  # cancelled meanwhile
        return
    if staged.on_demand_records:
        await _run_on_demand(run, staged, store=store, queues=queues, objects=objects, runtime=runtime, settings=settings)
    else:
        await _start_jobs(run, staged, store=store, queues=queues)


async def _start_jobs(run: Run, staged: Staged, *, store: RunStore, queues: Queues) -> None:
    await store.put_new_jobs(staged.jobs)
    # The run's move and its jobs' SubmitJobs are one write (the outbox): a crash after it leaves
    # the messages for the watchdog to send, never jobs PENDING for ever.
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key)) for job in staged.jobs]
    run = await _move_unless_cancelled(run, "RUNNING", store=store, send=sent, total_rows=staged.total_rows,
                                       jobs_total=len(staged.jobs))
    crash_point("preprocess.after_jobs_recorded")
    await deliver(sent, queues=queues, store=store)
    log.info("run_started", rows=staged.total_rows, jobs=len(staged.jobs))


async def _run_on_demand(run: Run, staged: Staged, *, store: RunStore, queues: Queues, objects: SyncObjects,
                         runtime: Runtime, settings: Settings) -> None:
    """Fewer rows than a job's minimum: call InvokeModel for each, as a job's output would be."""
    records = [orjson.loads(line) for line in staged.on_demand_records]
    lines = await invoke_records(records, model_id=run.spec.model_id, runtime=runtime,
                                 concurrency=settings.on_demand_concurrency)
    await asyncio.to_thread(objects.put, layout.ondemand_uri(settings, run.run_id, 0), b"".join(lines))
    sent = [Outgoing("postprocess", CollectRun(run_id=run.run_id))]
    await _move_unless_cancelled(run, "FINALIZING", store=store, send=sent, total_rows=staged.total_rows,
                                 on_demand=True, on_demand_records=len(records))
    await deliver(sent, queues=queues, store=store)
    log.info("run_ran_on_demand", rows=staged.total_rows)


async def _move_unless_cancelled(run: Run, status: str, *, store: RunStore, send: list[Outgoing], **changes) -> Run:
    try:
        return await store.move_run(run, status, send=send, **changes)
    except ConflictError:
        # Cancelled while preparing: keep CANCELLING; submit cancels the pending jobs.
        latest = await store.get_run(run.run_id)
        if latest is None or latest.status != "CANCELLING":
            raise
        return await store.update_run(latest, send=send, **changes)


def run_id_of(source_key: str) -> str:
    """The run id of an S3 or event start: derived from its source, so a redelivered event (after a
    crash or a retryable error while staging) resumes the run it made instead of being ignored as a
    duplicate and leaving that run PREPARING for ever."""
    return uuid.uuid5(uuid.NAMESPACE_URL, source_key).hex


async def reject(input_uri: str, source_key: str, origin: str, reason: str, *, store: RunStore, queues: Queues,
                 request_id: str | None = None) -> None:
    """A start that cannot be a run (bad spec, unknown profile) still becomes a failed run and an email."""
    run_id = await store.create_run(Run(run_id=run_id_of(source_key), spec=None, input_uri=input_uri, origin=origin,
                                        source_key=source_key, request_id=request_id))
    run = await store.get_run(run_id)
    # spec None: only the run this reject made (or a crashed attempt of it), never a run that a
    # valid start of the same source made and is staging now.
    if run is not None and run.status == "PREPARING" and run.spec is None:
        await _fail(run, reason, store=store, queues=queues)


async def _fail(run: Run, reason: str, *, store: RunStore, queues: Queues) -> None:
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome="FAILED"))]
    await store.move_run(run, "FAILED", error=reason, send=sent)
    await deliver(sent, queues=queues, store=store)


_EXPECTED = '{"input_uri": "s3://bucket/key", "profile": "...", "spec": {...}, "request_id": "..."}'


def _batch_request(detail: dict, *, where: str) -> BatchRequest:
    try:
        return BatchRequest.model_validate(detail)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'detail'}: {e['msg']}" for e in exc.errors())
        raise InvalidRunSpec(f"{where} has the wrong schema: {problems}. Expected detail {_EXPECTED}") from None


def _usable_request_id(detail: object) -> str | None:
    """The request's idempotency key if it can be one (a string of 1 to 128 characters)."""
    value = detail.get("request_id") if isinstance(detail, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= REQUEST_ID_MAX else None


def _echo_request_id(detail: object) -> str | None:
    """What to answer an unusable request_id with, so the sender can still match the answer."""
    value = detail.get("request_id") if isinstance(detail, dict) else None
    return None if value is None else str(value)[:REQUEST_ID_MAX]


def _is_input(key: str) -> bool:
    return key.startswith(INCOMING) and not key.endswith(SIDECAR_SUFFIX) and not key.endswith("/")


def _existing_key(objects: SyncObjects, bucket: str, candidates: list[str]) -> str | None:
    for key in candidates:
        if objects.size(f"s3://{bucket}/{key}") is not None:
            return key
    return None


def _profile_of(key: str) -> str:
    parts = key.split("/")
    if len(parts) < 3 or not parts[1]:
        raise InvalidRunSpec(f"{key} is not under incoming/<profile>/: put input files in a profile's folder, "
                             "e.g. incoming/summarize/file.csv")
    return parts[1]


def _sidecar(objects: SyncObjects, uri: str) -> SpecOverrides:
    try:
        raw = objects.read_small(uri + SIDECAR_SUFFIX)
    except PermanentError as exc:
        raise InvalidRunSpec(f"the sidecar cannot be used: {exc}") from None
    if raw is None:
        return SpecOverrides()
    try:
        return SpecOverrides.model_validate_json(raw)
    except ValueError as exc:
        raise InvalidRunSpec(f"the sidecar {uri}{SIDECAR_SUFFIX} is not a valid spec: {exc}") from None
