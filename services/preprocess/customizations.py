"""How a customization starts: a spec dropped under `customizations/`, or a `Quarry Customization
Requested` event (idempotent by request_id, always answered). Both become one StartRun of kind
customize through preprocess's start_run; a spec that does not validate becomes a failed run, an
email and (for an event) a Quarry Customization Failed answer naming the field."""
from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from shared.domain.access import input_refusal
from shared.domain.customization import parse_customization
from shared.errors import InvalidRunSpec, PermanentError
from shared.messages import CustomizationRequest, CustomizationRequested, S3ObjectCreated, StartRun

CUSTOMIZATIONS = "customizations/"
_SUFFIXES = (".yaml", ".yml", ".json")
_EXPECTED = ('{"spec": {"base_model": ..., "training_data": ..., ...}} or {"spec_uri": "s3://bucket/key.yaml"}, with '
             'optional "validate_only" and "request_id"')


def is_customization(key: str) -> bool:
    return key.startswith(CUSTOMIZATIONS) and key.lower().endswith(_SUFFIXES)


async def customization_dropped(event: S3ObjectCreated, **ports: Any) -> None:
    from services.preprocess import handlers  # noqa: PLC0415 - handlers routes drops here

    objects, store, queues = ports["objects"], ports["store"], ports["queues"]
    bucket = event.detail.bucket.name
    candidates = [key for key in event.detail.object.candidate_keys() if is_customization(key)]
    version = event.detail.object.etag or event.detail.object.size
    uri = f"s3://{bucket}/{candidates[-1]}"
    try:
        key = await asyncio.to_thread(handlers._existing_key, objects, bucket, candidates)
        if key is None:
            return  # deleted before it was read
        uri = f"s3://{bucket}/{key}"
        spec = parse_customization(await asyncio.to_thread(handlers._read_config, objects, uri), where=f"from {uri}")
    except PermanentError as exc:
        reason = str(exc) if uri in str(exc) else f"{uri}: {exc}"
        await handlers.reject(uri, f"{uri}#{version}", "s3", reason, store=store, queues=queues, kind="customize")
        return
    source_key = f"{uri}#{version}"
    await handlers.start_run(StartRun(run_id=handlers.run_id_of(source_key), kind="customize", customization=spec,
                                      input_uri=spec.training_data, origin="s3", source_key=source_key), **ports)


async def customization_requested(event: CustomizationRequested, **ports: Any) -> None:
    """Start the customization an event asks for; idempotent by request_id, and always answered."""
    from services.preprocess import handlers  # noqa: PLC0415

    objects, store, queues, settings = ports["objects"], ports["store"], ports["queues"], ports["settings"]
    detail = event.detail
    request_id = handlers._usable_request_id(detail)
    source_key = f"event:{request_id or event.id}"
    answer_id = request_id or handlers._echo_request_id(detail)
    where = f"the Quarry Customization Requested event {event.id} from {event.source}"
    try:
        if not isinstance(detail, dict):
            raise InvalidRunSpec(f"{where} has a detail that is a JSON {type(detail).__name__}, not an object. "
                                 f"Expected detail {_EXPECTED}")
        try:
            request = CustomizationRequest.model_validate(detail)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'detail'}: {e['msg']}" for e in exc.errors())
            raise InvalidRunSpec(f"{where} has the wrong schema: {problems}. Expected detail {_EXPECTED}") from None
        if (request.spec is None) == (request.spec_uri is None):
            raise InvalidRunSpec(f"{where} must give exactly one of spec (inline) and spec_uri")
        if request.spec_uri is not None:
            refusal = input_refusal(request.spec_uri, inputs_bucket=settings.inputs_bucket,
                                    allowed=settings.allowed_inputs)
            if refusal:
                raise InvalidRunSpec(f"spec_uri: {refusal}")
            raw = await asyncio.to_thread(handlers._read_config, objects, request.spec_uri)
            spec = parse_customization(raw, where=f"from {request.spec_uri} ({where})")
        else:
            spec = parse_customization(request.spec, where=f"in {where}")
    except PermanentError as exc:
        input_uri = str(detail.get("spec_uri") or "(inline spec)") if isinstance(detail, dict) else "(no spec)"
        await handlers.reject(input_uri[:2048], source_key, "event", str(exc), store=store, queues=queues,
                              request_id=answer_id, kind="customize")
        return
    earlier = await store.get_run(handlers.run_id_of(source_key))
    if earlier is not None and (earlier.customization, earlier.validate_only) != (spec, request.validate_only):
        await handlers.reject(spec.training_data, f"{source_key}#reused:{event.id}", "event",
                              f"{where}: request_id {request_id!r} was already used by run {earlier.run_id} for another "
                              "request; give each different request its own request_id",
                              store=store, queues=queues, request_id=request_id, kind="customize")
        return
    await handlers.start_run(StartRun(run_id=handlers.run_id_of(source_key), kind="customize", customization=spec,
                                      validate_only=request.validate_only, input_uri=spec.training_data,
                                      origin="event", source_key=source_key, request_id=request_id), **ports)
