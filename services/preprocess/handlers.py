"""preprocess: turns a dropped file, a request event or a CLI submit into a run and its jobs."""
from __future__ import annotations

import asyncio
import uuid

import structlog
from pydantic import ValidationError

from services.preprocess.customizations import customization_dropped, is_customization
from services.preprocess.kinds import STARTERS, StartPorts
from services.preprocess.models import ModelCatalog
from services.preprocess.outcomes import fail_run
from shared.adapters.objects import SyncObjects
from shared.adapters.queues import Queues
from shared.adapters.registry import Registry
from shared.adapters.response_cache import ResponseCache
from shared.adapters.store import RunStore
from shared.adapters.bedrock import Runtime
from shared.adapters.customization import Customizations
from shared.domain.access import input_refusal
from shared.domain.evaluation import parse_config
from shared.domain.runs import Run
from shared.domain.spec import Profiles, SpecOverrides, resolve_spec
from shared.errors import InvalidRunSpec, PermanentError
from shared.messages import (
    REQUEST_ID_MAX, BatchRequest, BatchRequested, EvaluationRequest, EvaluationRequested, S3ObjectCreated, StartRun,
)
from shared.run_lease import run_lease
from shared.settings import Settings

log = structlog.get_logger("quarry.preprocess")

INCOMING = "incoming/"
SIDECAR_SUFFIX = ".spec.json"


async def object_created(event: S3ObjectCreated, *, profiles: Profiles, objects: SyncObjects, store: RunStore,
                         queues: Queues, runtime: Runtime, settings: Settings, models: ModelCatalog | None = None,
                         cache: ResponseCache | None = None, registry: Registry | None = None,
                         customizations: Customizations | None = None) -> None:
    bucket = event.detail.bucket.name
    if any(is_customization(key) for key in event.detail.object.candidate_keys()):
        await customization_dropped(event, objects=objects, store=store, queues=queues, runtime=runtime,
                                    settings=settings, models=models, cache=cache, registry=registry,
                                    customizations=customizations)
        return
    if any(_is_evaluation(key) for key in event.detail.object.candidate_keys()):
        await _evaluation_dropped(event, objects=objects, store=store, queues=queues, runtime=runtime,
                                  settings=settings, models=models, cache=cache, registry=registry)
        return
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
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models,
                    cache=cache, registry=registry)


async def batch_requested(event: BatchRequested, *, profiles: Profiles, objects: SyncObjects, store: RunStore,
                          queues: Queues, runtime: Runtime, settings: Settings, models: ModelCatalog | None = None,
                          cache: ResponseCache | None = None, registry: Registry | None = None) -> None:
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
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models,
                    cache=cache, registry=registry)


async def start_run(cmd: StartRun, *, store: RunStore, queues: Queues, objects: SyncObjects, runtime: Runtime,
                    settings: Settings, models: ModelCatalog | None = None, cache: ResponseCache | None = None,
                    registry: Registry | None = None, customizations: Customizations | None = None) -> None:
    """Record the run (once per source) and start it as its kind starts (services/preprocess/kinds)."""
    run_id = await store.create_run(Run(run_id=cmd.run_id, kind=cmd.kind, spec=cmd.spec, evaluation=cmd.evaluation,
                                        input_uri=cmd.input_uri, origin=cmd.origin, source_key=cmd.source_key,
                                        request_id=cmd.request_id, parent_run_id=cmd.parent_run_id,
                                        customization=cmd.customization, validate_only=cmd.validate_only))
    if run_id != cmd.run_id:
        log.info("duplicate_start_ignored", source_key=cmd.source_key, existing_run_id=run_id)
        return
    run = await store.get_run(run_id)
    if run is None or run.status != "PREPARING":
        return  # a redelivery after the run moved on
    structlog.contextvars.bind_contextvars(run_id=run.run_id)
    # One delivery stages; a duplicate (S3 sends some events twice) waits until the run moves on.
    # Staging reads the whole input: twice at once would double the memory and CPU.
    async def preparing() -> bool:
        latest = await store.get_run(run_id)
        return latest is not None and latest.status == "PREPARING"

    async with run_lease(store, run_id, "staging", seconds=settings.run_lease_s, poll_s=settings.run_lease_poll_s,
                         needed=preparing) as lease:
        run = await store.get_run(run_id) if lease else None
        if run is None or run.status != "PREPARING":
            log.info("run_already_staged", status=run.status if run else None)
            return
        await STARTERS[run.kind](run, ports=StartPorts(store=store, queues=queues, objects=objects, runtime=runtime,
                                                        settings=settings, models=models, cache=cache,
                                                        registry=registry, customizations=customizations))


def run_id_of(source_key: str) -> str:
    """The run id of an S3 or event start: derived from its source, so a redelivered event (after a
    crash or a retryable error while staging) resumes the run it made instead of being ignored as a
    duplicate and leaving that run PREPARING for ever."""
    return uuid.uuid5(uuid.NAMESPACE_URL, source_key).hex


async def reject(input_uri: str, source_key: str, origin: str, reason: str, *, store: RunStore, queues: Queues,
                 request_id: str | None = None, kind: str = "batch") -> None:
    """A start that cannot be a run (bad spec, unknown profile) still becomes a failed run and an email."""
    run_id = await store.create_run(Run(run_id=run_id_of(source_key), kind=kind, spec=None, input_uri=input_uri,
                                        origin=origin, source_key=source_key, request_id=request_id))
    run = await store.get_run(run_id)
    # spec None: only the run this reject made (or a crashed attempt of it), never a run that a
    # valid start of the same source made and is staging now.
    if (run is not None and run.status == "PREPARING" and run.spec is None and run.evaluation is None
            and run.customization is None):
        await fail_run(run, reason, store=store, queues=queues)


# --- evaluations: a config dropped under evaluations/, or a Quarry Evaluation Requested event ----------
EVALUATIONS = "evaluations/"
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_EXPECTED_EVALUATION = ('{"config": {"dataset": {...}, "models": [...]}} or {"config_uri": "s3://bucket/key.yaml"}, '
                        'with an optional "request_id"')


async def _evaluation_dropped(event: S3ObjectCreated, *, objects: SyncObjects, store: RunStore, queues: Queues,
                              runtime: Runtime, settings: Settings, models: ModelCatalog | None,
                              cache: ResponseCache | None, registry: Registry | None) -> None:
    bucket = event.detail.bucket.name
    candidates = [key for key in event.detail.object.candidate_keys() if _is_evaluation(key)]
    version = event.detail.object.etag or event.detail.object.size
    uri = f"s3://{bucket}/{candidates[-1]}"
    try:
        key = await asyncio.to_thread(_existing_key, objects, bucket, candidates)
        if key is None:
            log.info("object_ignored", key=event.detail.object.key, reason="deleted before it was read")
            return
        uri = f"s3://{bucket}/{key}"
        config = parse_config(await asyncio.to_thread(_read_config, objects, uri), where=f"from {uri}")
    except PermanentError as exc:
        reason = str(exc) if uri in str(exc) else f"{uri}: {exc}"
        await reject(uri, f"{uri}#{version}", "s3", reason, store=store, queues=queues, kind="evaluate")
        return
    source_key = f"{uri}#{version}"
    await start_run(StartRun(run_id=run_id_of(source_key), kind="evaluate", evaluation=config,
                             input_uri=config.dataset.uri, origin="s3", source_key=source_key),
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models,
                    cache=cache, registry=registry)


async def evaluation_requested(event: EvaluationRequested, *, objects: SyncObjects, store: RunStore, queues: Queues,
                               runtime: Runtime, settings: Settings, models: ModelCatalog | None = None,
                               cache: ResponseCache | None = None, registry: Registry | None = None) -> None:
    """Start the evaluation an event asks for; idempotent by request_id, and always answered."""
    detail = event.detail
    request_id = _usable_request_id(detail)
    source_key = f"event:{request_id or event.id}"
    answer_id = request_id or _echo_request_id(detail)
    where = f"the Quarry Evaluation Requested event {event.id} from {event.source}"
    try:
        if not isinstance(detail, dict):
            raise InvalidRunSpec(f"{where} has a detail that is a JSON {type(detail).__name__}, not an object. "
                                 f"Expected detail {_EXPECTED_EVALUATION}")
        try:
            request = EvaluationRequest.model_validate(detail)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'detail'}: {e['msg']}" for e in exc.errors())
            raise InvalidRunSpec(f"{where} has the wrong schema: {problems}. Expected detail "
                                 f"{_EXPECTED_EVALUATION}") from None
        if (request.config is None) == (request.config_uri is None):
            raise InvalidRunSpec(f"{where} must give exactly one of config (inline) and config_uri")
        if request.config_uri is not None:
            refusal = input_refusal(request.config_uri, inputs_bucket=settings.inputs_bucket,
                                    allowed=settings.allowed_inputs)
            if refusal:
                raise InvalidRunSpec(f"config_uri: {refusal}")
            raw = await asyncio.to_thread(_read_config, objects, request.config_uri)
            config = parse_config(raw, where=f"from {request.config_uri} ({where})")
        else:
            config = parse_config(request.config, where=f"in {where}")
    except PermanentError as exc:
        input_uri = str(detail.get("config_uri") or "(inline config)") if isinstance(detail, dict) else "(no config)"
        await reject(input_uri[:2048], source_key, "event", str(exc), store=store, queues=queues,
                     request_id=answer_id, kind="evaluate")
        return
    earlier = await store.get_run(run_id_of(source_key))
    if earlier is not None and earlier.evaluation != config:
        await reject(config.dataset.uri, f"{source_key}#reused:{event.id}", "event",
                     f"{where}: request_id {request_id!r} was already used by run {earlier.run_id} for another "
                     "request; give each different request its own request_id",
                     store=store, queues=queues, request_id=request_id, kind="evaluate")
        return
    await start_run(StartRun(run_id=run_id_of(source_key), kind="evaluate", evaluation=config,
                             input_uri=config.dataset.uri, origin="event", source_key=source_key,
                             request_id=request_id),
                    store=store, queues=queues, objects=objects, runtime=runtime, settings=settings, models=models,
                    cache=cache, registry=registry)


def _is_evaluation(key: str) -> bool:
    return key.startswith(EVALUATIONS) and key.lower().endswith(_CONFIG_SUFFIXES)


def _read_config(objects: SyncObjects, uri: str) -> bytes:
    raw = objects.read_small(uri)
    if raw is None:
        raise InvalidRunSpec(f"{uri} does not exist")
    return raw


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
