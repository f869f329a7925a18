"""The evaluate kind's collection: once every child (one batch run per model) has ended, score every
record for every model, compare, choose, write the outputs, record the registry, and finish.

A child that failed whole is that model reported failed and left out of the comparison; the
evaluation still succeeds with the rest, and fails only when no model answered at all.
"""
from __future__ import annotations

import asyncio
from typing import Any

import structlog

from services.postprocess.evaluation_outputs import EvaluationOutputs, score_evaluation
from services.postprocess.judging import judge_dataset_uri, judge_run_id, judge_spec, stage_judging
from services.postprocess.kinds import CollectPorts
from services.postprocess.latency_probe import probe_latency
from shared.adapters.queues import Outgoing, deliver
from shared.domain.runs import Run
from shared.errors import QuarryError
from shared.evaluation.results import EvaluationResults
from shared.messages import RunFinished, StartRun
from shared.ondemand import invoke_records

log = structlog.get_logger("quarry.postprocess")
_EMBED_CONCURRENCY = 8


async def collect(run: Run, *, ports: CollectPorts) -> None:
    store = ports.store
    children = {name: await store.get_run(child_id) for name, child_id in run.children.items()}
    judges = {name: await store.get_run(child_id) for name, child_id in (run.judges or {}).items()}
    if run.status == "CANCELLING":
        await _end_cancelled(run, children, judges, ports)
        return
    if run.status == "RUNNING":
        if _waiting(children):
            return  # the last child to end sends the CollectRun that finishes the evaluation
        if run.evaluation.judge is not None and run.judges is None:
            run = await _start_judging(run, children, ports)
            if run.judges:
                return  # the judge's runs report as they end, as the models' runs did
        if _waiting(judges):
            return
        run = await store.move_run(run, "FINALIZING")
    if run.status != "FINALIZING":
        return
    if run.evaluation.latency_probe and run.latency is None:
        latency = await probe_latency(run, children, runtime=ports.runtime, objects=ports.objects,
                                      settings=ports.settings)
        run = await store.update_run(run, latency=latency)
    embed = _embedder(run, ports, asyncio.get_running_loop())
    outputs = await asyncio.to_thread(score_evaluation, run, children, objects=ports.objects,
                                      settings=ports.settings, embed=embed, judges=judges)
    results = outputs.results
    if run.evaluation.registry is not None and ports.registry is not None:
        await _record(run, results, outputs, ports)
    ok = [m for m in results.models if m.status == "ok"]
    outcome = "SUCCEEDED" if ok else "FAILED"
    error = None if ok else "every model failed: " + "; ".join(f"{m.name}: {m.error}" for m in results.models)
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=outcome))]
    await store.move_run(run, outcome, result_uri=outputs.records_uri, summary=evaluation_summary(results, outputs, children),
                         error=error, send=sent)
    await deliver(sent, queues=ports.queues, store=store)
    log.info("evaluation_finished", outcome=outcome, selection=results.selection.outcome,
             winner=results.selection.winner, recommended=results.selection.recommended)


def _waiting(runs: dict[str, Run | None]) -> bool:
    return any(child is None or not child.terminal for child in runs.values())


async def _start_judging(run: Run, children: dict[str, Run | None], ports: CollectPorts) -> Run:
    """The judge stage: each model's judge dataset staged, and the judge's child runs recorded on the
    parent with their StartRuns in one write (a redelivery finds them recorded and starts none)."""
    counts = await asyncio.to_thread(stage_judging, run, children, objects=ports.objects, settings=ports.settings)
    judges = {name: judge_run_id(run.run_id, name) for name, rows in counts.items() if rows}
    sent = [Outgoing("preprocess", StartRun(
        run_id=judges[name], kind="batch", spec=judge_spec(run.evaluation, name),
        input_uri=judge_dataset_uri(ports.settings, run.run_id, name), origin="child",
        source_key=f"judge:{run.run_id}:{name}", parent_run_id=run.run_id)) for name in judges]
    run = await ports.store.update_run(run, judges=judges, send=sent)
    await deliver(sent, queues=ports.queues, store=ports.store)
    log.info("evaluation_judging", models=len(judges), prompts=sum(counts.values()))
    return run


async def _end_cancelled(run: Run, children: dict[str, Run | None], judges: dict[str, Run | None],
                         ports: CollectPorts) -> None:
    """A cancelled evaluation ends once every child has (each stopped its own jobs): CANCELLED, with
    its one RunFinished (the email) in the same write. Nothing is scored: a part of the models'
    answers would compare them on different records."""
    if _waiting(children) or _waiting(judges):
        return
    ended = ", ".join(f"{name} {child.status.lower()}" for name, child in children.items() if child is not None)
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome="CANCELLED"))]
    await ports.store.move_run(run, "CANCELLED", send=sent,
                               error="cancelled; nothing was scored" + (f" (the models' runs: {ended})" if ended else ""))
    await deliver(sent, queues=ports.queues, store=ports.store)
    log.info("evaluation_finished", outcome="CANCELLED")


def evaluation_summary(results: EvaluationResults, outputs: EvaluationOutputs,
                       children: dict[str, Run | None]) -> dict[str, Any]:
    """What the run item, the email and the completion event carry: the decision and each model's figures."""
    s = results.selection
    primary = results.primary_metric
    models = {}
    for m in results.models:
        summary = m.metrics.get(primary)
        child = children.get(m.name)
        models[m.name] = {
            "model_id": m.model_id, "status": m.status, "error": m.error, "records": m.records, "errors": m.errors,
            "from_cache": m.from_cache, "mean": summary.mean if summary else None,
            "ci": [summary.ci.low, summary.ci.high] if summary else None,
            "cost_usd": m.cost.total_usd, "full_batch_usd": m.cost.full_batch_usd,
            "run_id": child.run_id if child else None,
            "jobs": (child.summary or {}).get("jobs", 0) if child else 0,
            "latency_ms": ({"p50": m.latency.p50_ms, "p90": m.latency.p90_ms, "n": m.latency.n} if m.latency else None),
            "judge": {name: x.mean for name, x in m.metrics.items() if name.startswith("judge_")},
        }
    return {
        "kind": "evaluate", "outcome": s.outcome, "winner": s.winner, "recommended": s.recommended,
        "runner_up": s.runner_up, "margin": s.margin, "margin_ci": [s.margin_ci.low, s.margin_ci.high],
        "tied": s.tied, "failed_models": s.failed, "reason": s.reason, "primary_metric": primary,
        "min_effect": results.min_effect, "alpha": results.alpha, "records": results.dataset.used_rows,
        "pairs_from_cache": sum(m.from_cache for m in results.models), "models": models,
        "report_uri": outputs.report_uri, "results_uri": outputs.results_uri, "records_uri": outputs.records_uri,
        "records_parquet_uri": outputs.parquet_uri,
    }


async def _record(run: Run, results: EvaluationResults, outputs: EvaluationOutputs, ports: CollectPorts) -> None:
    group = run.evaluation.registry.group
    at = run.created_at.isoformat()
    entries = [{
        "group": group, "at": at, "run_id": run.run_id, "name": m.name, "model_id": m.model_id, "status": m.status,
        "metrics": {name: {"mean": x.mean, "ci": [x.ci.low, x.ci.high], "n": x.n, "missing": x.missing}
                    for name, x in m.metrics.items()},
        "primary_metric": results.primary_metric, "cost_usd": m.cost.full_batch_usd,
        "config_hash": results.config_hash, "dataset_uri": results.dataset.uri, "dataset_hash": results.dataset.hash,
        "winner": results.selection.winner == m.name, "recommended": results.selection.recommended == m.name,
        "results_uri": outputs.results_uri,
    } for m in results.models]
    recommended = next((e for e in entries if e["recommended"]), None)
    champion = None if recommended is None else {
        "at": at, "run_id": run.run_id, "name": recommended["name"], "model_id": recommended["model_id"],
        "primary_metric": results.primary_metric, "mean": recommended["metrics"][results.primary_metric]["mean"],
        "outcome": results.selection.outcome}
    await ports.registry.record(group, entries, champion)


def _embedder(run: Run, ports: CollectPorts, loop: asyncio.AbstractEventLoop):
    """A blocking embed(texts) for the scoring thread: the config's embedding model on Bedrock, called
    on this worker's event loop with bounded concurrency."""
    config = run.evaluation
    if "semantic_similarity" not in config.metric_names:
        return None
    model_id = config.embedding_model

    async def embed_async(texts: list[str]) -> list[list[float] | None]:
        records = [{"recordId": str(i), "modelInput": {"inputText": text[:20_000] or " ", "normalize": True}}
                   for i, text in enumerate(texts)]
        lines = await invoke_records(records, model_id=model_id, runtime=ports.runtime,
                                     concurrency=_EMBED_CONCURRENCY)
        import orjson  # noqa: PLC0415

        out: list[list[float] | None] = []
        for line in lines:
            obj = orjson.loads(line)
            out.append((obj.get("modelOutput") or {}).get("embedding"))
        return out

    def embed(texts: list[str]) -> list[list[float] | None]:
        try:
            return asyncio.run_coroutine_threadsafe(embed_async(texts), loop).result()
        except QuarryError:
            return [None] * len(texts)

    return embed
