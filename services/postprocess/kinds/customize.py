"""The customize kind's collection: the run's orchestrator, called whenever one of its steps ends.

customization job ended -> (failed/stopped: finish) -> hosting requested (recorded with its
SubmitJob in one write) -> hosting in service -> the gate: an `evaluate` child run of the custom
model on its hosting against the base, on the held-out data, identical decoding (temperature 0)
-> kept (the custom model beats the base by more than min_effect with the whole 95% bootstrap
interval of the difference above it) or not kept (the hosting is deleted; the custom model stays
for inspection). Every path that does not keep the hosting deletes it before the run ends; the
watchdog's sweeper (shared/hosting_sweeper.py) deletes what a crash left.
"""
from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import structlog

from services.postprocess.kinds import CollectPorts
from shared.adapters.queues import Outgoing, deliver
from shared.domain.customization import PRICES, CustomizationSpec
from shared.domain.evaluation import EvaluationConfig
from shared.domain.runs import Job, Run
from shared.errors import PermanentError
from shared.messages import RunFinished, StartRun, SubmitJob

log = structlog.get_logger("quarry.postprocess")

CUSTOMIZATION_KEY = "customization"
HOSTING_KEY = "hosting"
GATE = "gate"
LOSS_POINTS = 200
_VERDICTS_FAILED = {"FAILED": "job_failed", "STOPPED": "job_stopped", "CANCELLED": "cancelled"}


def gate_run_id(run_id: str) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"quarry:{run_id}:gate").hex


async def collect(run: Run, *, ports: CollectPorts) -> None:
    store = ports.store
    jobs = {job.job_key: job for job in await store.list_jobs(run.run_id)}
    training, hosting = jobs.get(CUSTOMIZATION_KEY), jobs.get(HOSTING_KEY)
    if run.status == "CANCELLING":
        await _cancelled(run, training, hosting, ports)
        return
    if run.status not in ("RUNNING", "FINALIZING") or training is None or not training.terminal:
        return  # the job's end (poll) sends the CollectRun that moves the run on
    spec = run.customization
    if training.status != "COMPLETED":
        verdict = _VERDICTS_FAILED.get(training.status, "job_failed")
        outcome = "CANCELLED" if verdict == "cancelled" else "FAILED"
        why = training.message or f"the customization job ended {training.status}"
        await _finish(run, outcome, verdict, ports, error=f"customization job {training.status.lower()}: {why}",
                      training=training)
        return
    if not run.loss_curve:
        run = await store.update_run(run, loss_curve=await asyncio.to_thread(_loss_curve, training, ports))
    if spec.hosting.type == "none":
        await _finish(run, "SUCCEEDED", "trained", ports, training=training)
        return
    if hosting is None:
        await _request_hosting(run, training, ports)
        return
    child_id = run.children.get(GATE)
    child = await store.get_run(child_id) if child_id else None
    if child is not None and child.terminal:
        await _decide(run, child, training, hosting, ports)  # also after a crash part-way through deciding
        return
    if hosting.status in ("PENDING", "SUBMITTING", "SUBMITTED"):
        return  # poll sends a CollectRun when it is in service or has failed
    if hosting.status != "RUNNING":
        await _delete(hosting, ports, f"its hosting ended {hosting.status}")
        await _finish(run, "FAILED", "hosting_failed", ports, training=training, hosting=hosting,
                      error=f"the hosting {hosting.bedrock_arn or hosting.name} did not come up: "
                            f"{hosting.message or hosting.bedrock_status or hosting.status}; it was deleted")
        return
    if spec.gate is None:
        hosting = await store.move_job(hosting, "COMPLETED", message="kept: no gate was asked for")
        await _finish(run, "SUCCEEDED", "hosted", ports, training=training, hosting=hosting, kept=True)
        return
    if child_id is None:
        await _start_gate(run, training, hosting, ports)
    # else the gate runs: its end (notify) sends the CollectRun


# --- the steps ----------------------------------------------------------------------------------------
async def _request_hosting(run: Run, training: Job, ports: CollectPorts) -> None:
    spec = run.customization
    job = Job(run_id=run.run_id, job_key=HOSTING_KEY, family="hosting", index=1, model_id=spec.base_model,
              chunk_uri=training.custom_model_arn or "", output_uri="", records=spec.hosting.model_units, bytes=0,
              first_row=0, end_row=0, custom_model_arn=training.custom_model_arn, hosting_kind=spec.hosting.type)
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key))]
    # The hosting is in the table, with the message that requests it, before anything is created.
    if await ports.store.put_new_jobs([job], send=sent):
        await deliver(sent, queues=ports.queues, store=ports.store)
        log.info("hosting_planned", kind=spec.hosting.type, custom_model_arn=training.custom_model_arn)


async def _start_gate(run: Run, training: Job, hosting: Job, ports: CollectPorts) -> None:
    spec = run.customization
    gate = spec.gate
    config = EvaluationConfig.model_validate({
        "name": f"gate/{spec.custom_model_name}"[:100],
        "dataset": {"uri": gate.data, "input": "prompt", "target": "completion", "limit": gate.limit},
        "models": [{"name": "custom", "model_id": hosting.bedrock_arn}, {"name": "base", "model_id": spec.base_model}],
        "metrics": gate.metrics, "params": {"temperature": 0, "max_tokens": gate.max_tokens},
        "selection": {"primary": gate.primary_metric, "min_effect": gate.min_effect}, "cache": "off",
    })
    child_id = gate_run_id(run.run_id)
    sent = [Outgoing("preprocess", StartRun(run_id=child_id, kind="evaluate", evaluation=config, input_uri=gate.data,
                                            origin="child", source_key=f"child:{run.run_id}:{GATE}",
                                            parent_run_id=run.run_id))]
    await ports.store.update_run(run, children={**run.children, GATE: child_id}, send=sent)
    await deliver(sent, queues=ports.queues, store=ports.store)
    log.info("gate_started", gate_run_id=child_id, hosting_arn=hosting.bedrock_arn)


async def _decide(run: Run, child: Run, training: Job, hosting: Job, ports: CollectPorts) -> None:
    gate = run.customization.gate
    verdict = gate_verdict(child, gate.primary_metric, gate.min_effect)
    if verdict["passed"] and hosting.status not in ("RUNNING", "COMPLETED"):
        verdict = {**verdict, "passed": False, "reason": f"{verdict['reason']}; but its hosting is gone "
                                                         f"({hosting.status}: {hosting.message})"}
    if verdict["passed"]:
        if hosting.status == "RUNNING":
            hosting = await ports.store.move_job(hosting, "COMPLETED", message="kept: the gate passed")
        await _finish(run, "SUCCEEDED", "gate_passed", ports, training=training, hosting=hosting, kept=True,
                      gate=verdict)
        return
    hosting = await _delete(hosting, ports, "deleted: the gate did not pass")
    failed = child.status != "SUCCEEDED"
    await _finish(run, "FAILED" if failed else "SUCCEEDED", "gate_failed" if failed else "gate_not_passed", ports,
                  training=training, hosting=hosting, gate=verdict,
                  error=f"the gate run {child.run_id} {child.status.lower()}: {child.error}" if failed else None)


def gate_verdict(child: Run, primary: str, min_effect: float) -> dict[str, Any]:
    """The custom model against its base on the primary metric, from the gate run's summary: the
    paired mean difference and its 95% bootstrap interval; passed only if both are above min_effect."""
    s = child.summary or {}
    if child.status != "SUCCEEDED" or not s.get("models"):
        return {"passed": False, "reason": f"the gate run ended {child.status}: {child.error}", "gate_run_id": child.run_id}
    means = {name: m.get("mean") for name, m in s["models"].items()}
    runner_up, margin, ci = s.get("runner_up"), s.get("margin"), s.get("margin_ci") or [None, None]
    if runner_up not in ("custom", "base") or margin is None or None in ci:
        return {"passed": False, "reason": "the custom model or its base has no scores to compare",
                "gate_run_id": child.run_id, "means": means}
    # The summary gives the leader's lead over the runner-up; the gate wants custom minus base.
    if runner_up == "base":
        diff, low, high = margin, ci[0], ci[1]
    else:
        diff, low, high = -margin, -ci[1], -ci[0]
    passed = diff > min_effect and low > min_effect
    reason = (f"the custom model {'beats' if passed else 'does not beat'} its base on {primary} by more than "
              f"{min_effect:g} with the whole interval above it: difference {diff:+.4f} (95% CI {low:+.4f} to {high:+.4f})")
    return {"passed": passed, "reason": reason, "metric": primary, "difference": diff, "ci": [low, high],
            "min_effect": min_effect, "n": s.get("records"), "means": means, "gate_run_id": child.run_id,
            "results_uri": s.get("results_uri"), "report_uri": s.get("report_uri")}


async def _cancelled(run: Run, training: Job | None, hosting: Job | None, ports: CollectPorts) -> None:
    if training is not None and not training.terminal and training.status != "PENDING":
        return  # stopping: poll sees it Stopped and collects again
    if hosting is not None and not hosting.terminal:
        if hosting.status == "SUBMITTING" and not hosting.bedrock_arn:
            return  # submit sees the run CANCELLING after its create and deletes what it made
        hosting = await _delete(hosting, ports, "deleted: the run was cancelled")
    await _finish(run, "CANCELLED", "cancelled", ports, training=training, hosting=hosting,
                  error="cancelled" + ("; its hosting was deleted" if hosting is not None else ""))


async def _delete(hosting: Job, ports: CollectPorts, message: str) -> Job:
    """Delete the hosting on Bedrock (a second delete finds nothing, which is fine), then record it."""
    await ports.customizations.delete_hosting(hosting.hosting_kind, hosting.bedrock_arn or hosting.name)
    log.info("hosting_deleted", hosting_arn=hosting.bedrock_arn, reason=message)
    if hosting.terminal and hosting.status != "COMPLETED":
        return hosting
    if hosting.status == "COMPLETED":
        return await ports.store.update_job(hosting, message=message)
    return await ports.store.move_job(hosting, "CANCELLED", message=message)


async def _finish(run: Run, outcome: str, verdict: str, ports: CollectPorts, *, training: Job | None = None,
                  hosting: Job | None = None, kept: bool = False, gate: dict | None = None,
                  error: str | None = None) -> None:
    store = ports.store
    summary = customization_summary(run, verdict, training=training, hosting=hosting, kept=kept, gate=gate)
    if training is not None and training.custom_model_arn and ports.registry is not None and run.customization.registry:
        await _record(run, summary, ports)
    if outcome in ("SUCCEEDED", "PARTIAL") and run.status != "FINALIZING":
        run = await store.move_run(run, "FINALIZING")
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=outcome))]
    await store.move_run(run, outcome, summary=summary, gate=gate, error=error, send=sent)
    await deliver(sent, queues=ports.queues, store=store)
    log.info("customization_finished", outcome=outcome, verdict=verdict, kept=kept)


def customization_summary(run: Run, verdict: str, *, training: Job | None, hosting: Job | None, kept: bool,
                          gate: dict | None) -> dict[str, Any]:
    """What the run item, the email and the answer event carry."""
    spec: CustomizationSpec = run.customization
    prices = PRICES.get(spec.base_model)
    hourly = prices.pt_hour * spec.hosting.model_units if prices and spec.hosting.type == "provisioned" else None
    return {
        "kind": "customize", "verdict": verdict, "kept": kept, "base_model": spec.base_model,
        "custom_model_name": spec.custom_model_name,
        "custom_model_arn": training.custom_model_arn if training else None,
        "job_arn": training.bedrock_arn if training else None,
        "job_status": training.bedrock_status if training else None,
        "failure_message": training.message if training and training.status != "COMPLETED" else None,
        "training_loss": training.training_loss if training else None,
        "validation_loss": training.validation_loss if training else None,
        "hosting": None if hosting is None else {
            "kind": hosting.hosting_kind, "arn": hosting.bedrock_arn, "name": hosting.name, "status": hosting.status,
            "kept": kept, "message": hosting.message, "hourly_usd": hourly},
        "gate": gate, "preflight": {k: v for k, v in (run.preflight or {}).items() if k != "text"},
        "loss_points": len(run.loss_curve),
    }


async def _record(run: Run, summary: dict[str, Any], ports: CollectPorts) -> None:
    """The custom model in the registry, with its lineage; the champion of its group when kept."""
    spec = run.customization
    at = run.created_at.isoformat()
    gate = summary.get("gate") or {}
    hosting = summary.get("hosting") or {}
    entry = {
        "group": spec.registry, "at": at, "run_id": run.run_id, "name": spec.custom_model_name,
        "kind": "custom_model", "model_id": hosting.get("arn") if summary["kept"] else summary["custom_model_arn"],
        "custom_model_arn": summary["custom_model_arn"], "status": "ok", "kept": summary["kept"],
        "verdict": summary["verdict"], "lineage": {
            "base_model": spec.base_model, "type": spec.type, "job_arn": summary["job_arn"],
            "data_hashes": (run.preflight or {}).get("hashes"), "training_data": spec.training_data,
            "validation_data": spec.validation_data, "hyperparameters": (run.preflight or {}).get("hyperparameters"),
            "spec_hash": spec.spec_hash()},
        "gate": {k: gate.get(k) for k in ("metric", "difference", "ci", "min_effect", "n", "means", "passed",
                                          "gate_run_id")} if gate else None,
        "metrics": {gate["metric"]: {"mean": (gate.get("means") or {}).get("custom")}} if gate.get("metric") else {},
    }
    champion = None if not summary["kept"] or not hosting.get("arn") else {
        "at": at, "run_id": run.run_id, "name": spec.custom_model_name, "model_id": hosting["arn"],
        "primary_metric": gate.get("metric"), "mean": (gate.get("means") or {}).get("custom"), "outcome": "gate_passed"}
    await ports.registry.record(spec.registry, [entry], champion)


def _loss_curve(training: Job, ports: CollectPorts) -> list[list[float]]:
    """[[step, training loss], ...] from the job's step_wise_training_metrics.csv (Bedrock's layout),
    thinned to at most LOSS_POINTS points; empty when the file is not there."""
    if not training.bedrock_arn:
        return []
    job_id = training.bedrock_arn.rsplit("/", 1)[-1]
    uri = f"{training.output_uri.rstrip('/')}/model-customization-job-{job_id}/training_artifacts/step_wise_training_metrics.csv"
    try:
        raw = ports.objects.read_small(uri, limit=64 * 1024 * 1024)
    except PermanentError:
        return []
    if raw is None:
        return []
    rows = [(float(r["step_number"]), float(r["training_loss"])) for r in csv.DictReader(io.StringIO(raw.decode()))
            if r.get("training_loss")]
    every = max(1, len(rows) // LOSS_POINTS)
    thinned = rows[::every]
    if rows and thinned[-1] != rows[-1]:
        thinned.append(rows[-1])
    return [list(point) for point in thinned]
