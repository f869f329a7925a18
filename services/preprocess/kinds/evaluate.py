"""The evaluate kind's start: check the config's models and dataset, stage the dataset once, and
start one child batch run per model over it.

Each (model, record) pair becomes a record of a child's batch run, so generation goes through the
same splitter, slots, deterministic tokens, polling, retries, salvage and on-demand path as any
batch run; models Bedrock runs no batch jobs for (provisioned throughput, deployments) go on
demand there. The children are recorded with the parent's move to RUNNING (their StartRuns in the
outbox of that one write), so a crash never leaves an evaluation with half its models started.
"""
from __future__ import annotations

import asyncio
import uuid

import structlog

from services.preprocess.kinds import StartPorts
from services.preprocess.outcomes import fail_run
from shared.adapters.queues import Outgoing, deliver
from shared.dataplane.eval_dataset import StagedDataset, stage_dataset
from shared.domain import layout
from shared.domain.access import input_refusal
from shared.domain.evaluation import CHAMPION_PREFIX, EvaluationConfig, child_spec, is_custom_arn
from shared.domain.runs import Run
from shared.errors import ConflictError, InvalidRunSpec, PermanentError
from shared.messages import StartRun

log = structlog.get_logger("quarry.preprocess")


def child_run_id(parent_run_id: str, model_name: str) -> str:
    """A child's run id: derived from the parent and the model, so a redelivered start finds it."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"quarry:{parent_run_id}:model:{model_name}").hex


async def start(run: Run, *, ports: StartPorts) -> None:
    store, queues, settings = ports.store, ports.queues, ports.settings
    config = run.evaluation
    assert config is not None
    try:
        refusal = input_refusal(config.dataset.uri, inputs_bucket=settings.inputs_bucket,
                                allowed=settings.allowed_inputs)
        if refusal:
            raise InvalidRunSpec(f"dataset.uri: {refusal}")
        model_ids = await _resolve_models(config, ports)
        bases = {name: await _base_model(model_id, ports) for name, model_id in model_ids.items()}
        specs = {m.name: child_spec(config, m, model_id=model_ids[m.name], base_model_id=bases[m.name])
                 for m in config.models}
        staged = await asyncio.to_thread(_stage, run, config, ports)
    except PermanentError as exc:
        log.info("evaluation_rejected", reason=str(exc))
        await fail_run(run, str(exc), store=store, queues=queues)
        return
    children = {m.name: child_run_id(run.run_id, m.name) for m in config.models}
    dataset_uri = layout.dataset_uri(settings, run.run_id)
    sent = [Outgoing("preprocess", StartRun(run_id=children[name], kind="batch", spec=spec, input_uri=dataset_uri,
                                            origin="child", source_key=f"child:{run.run_id}:{name}",
                                            parent_run_id=run.run_id))
            for name, spec in specs.items()]
    latest = await store.get_run(run.run_id)
    if latest is None or latest.terminal or latest.status == "CANCELLING":
        return  # cancelled while staging: no child is started, and the cancel's collect ends it
    try:
        await store.move_run(latest, "RUNNING", send=sent, children=children, model_ids=model_ids,
                             total_rows=staged.used_rows, dataset=_facts(config, staged))
    except ConflictError:
        again = await store.get_run(run.run_id)
        if again is not None and again.status == "CANCELLING":
            log.info("evaluation_cancelled_while_staging")
            return
        raise
    await deliver(sent, queues=queues, store=store)
    log.info("evaluation_started", models=len(children), records=staged.used_rows)


async def _resolve_models(config: EvaluationConfig, ports: StartPorts) -> dict[str, str]:
    """Model name -> model id, `champion@group` read from the registry; every id checked against
    the deployment's allowed models and the ones Bedrock serves."""
    resolved: dict[str, str] = {}
    for i, model in enumerate(config.models):
        model_id = model.model_id
        if model_id.startswith(CHAMPION_PREFIX):
            group = model_id.removeprefix(CHAMPION_PREFIX)
            champion = await ports.registry.champion(group) if ports.registry is not None else None
            if champion is None:
                raise InvalidRunSpec(f"models.{i}.model_id: {model_id!r}: registry group {group!r} has no champion "
                                     "yet; evaluate models with `registry: {group}` first, or name a model id")
            model_id = champion["model_id"]
        if ports.models is not None:
            try:
                await ports.models.check(model_id)
            except InvalidRunSpec as exc:
                raise InvalidRunSpec(f"models.{i}.model_id: {exc}") from None
        resolved[model.name] = model_id
    if config.judge is not None and ports.models is not None:
        try:
            await ports.models.check(config.judge.model_id)
        except InvalidRunSpec as exc:
            raise InvalidRunSpec(f"judge.model_id: {exc}") from None
    return resolved


async def _base_model(model_id: str, ports: StartPorts) -> str | None:
    if not is_custom_arn(model_id):
        return None
    return await ports.models.base_model(model_id) if ports.models is not None else None


def _stage(run: Run, config: EvaluationConfig, ports: StartPorts) -> StagedDataset:
    """Stream the dataset from S3 into the JSONL the children read (written as it is read)."""
    dataset = config.dataset
    stream = ports.objects.open(dataset.uri)
    try:
        with ports.objects.writing(layout.dataset_uri(ports.settings, run.run_id)) as out:
            return stage_dataset(stream, out, name=dataset.uri, input_column=dataset.input, template=dataset.template,
                                 target=dataset.target, category=dataset.category, limit=dataset.limit,
                                 sample=dataset.sample, seed=dataset.seed,
                                 row_timeout_s=ports.settings.template_row_timeout_s,
                                 max_row_bytes=ports.settings.max_record_bytes)
    finally:
        stream.close()


def _facts(config: EvaluationConfig, staged: StagedDataset) -> dict:
    return {"uri": config.dataset.uri, "hash": staged.content_hash, "rows": staged.rows, "used_rows": staged.used_rows,
            "input": staged.shape.input_description, "target": staged.shape.target,
            "category": staged.shape.category, "columns": staged.columns}
