"""The customize kind's start: the pre-flight, then the customization job, or a refusal with the report.

Every record of the training, validation and held-out data is checked (shared/dataplane/
customization_data.py), the hyperparameters against the base model's table, the base model's
lifecycle, and the cost against the budget. The report (JSON and text) goes to the results bucket
and onto the run (and so into the email). Nothing is created on Bedrock unless all of it passes;
the customization job is recorded with its SubmitJob in the same write as the run's move to RUNNING.
"""
from __future__ import annotations

import asyncio

import orjson
import structlog

from services.preprocess.kinds import StartPorts
from services.preprocess.outcomes import fail_run, move_unless_cancelled
from shared.adapters.queues import Outgoing, deliver
from shared.dataplane.customization_data import SHOWN_PROBLEMS, PreflightReport, preflight
from shared.domain.access import input_refusal, model_refusal
from shared.domain.runs import Job, Run, now
from shared.errors import InvalidRunSpec, PermanentError
from shared.messages import RunFinished, SubmitJob

log = structlog.get_logger("quarry.preprocess")

CUSTOMIZATION_KEY = "customization"


def report_prefix(results_bucket: str, run_id: str) -> str:
    return f"s3://{results_bucket}/runs/{run_id}/customization"


async def start(run: Run, *, ports: StartPorts) -> None:
    store, queues, settings = ports.store, ports.queues, ports.settings
    spec = run.customization
    assert spec is not None
    try:
        for field, uri in (("training_data", spec.training_data), ("validation_data", spec.validation_data),
                           ("gate.data", spec.gate.data if spec.gate else None)):
            refusal = uri and input_refusal(uri, inputs_bucket=settings.inputs_bucket, allowed=settings.allowed_inputs)
            if refusal:
                raise InvalidRunSpec(f"{field}: {refusal}")
        refusal = model_refusal(spec.base_model, allowed=settings.allowed_models)
        if refusal:
            raise InvalidRunSpec(f"base_model: {refusal}")
        lifecycle = await ports.customizations.lifecycle(spec.base_model) if ports.customizations else None
        report = await asyncio.to_thread(_preflight, run, ports, lifecycle)
    except PermanentError as exc:
        await fail_run(run, str(exc), store=store, queues=queues)
        return
    facts = _facts(run, report, settings.results_bucket)
    latest = await store.get_run(run.run_id)
    if latest is None or latest.status != "PREPARING":
        return
    if not report.ok or run.validate_only:
        await _end_at_preflight(latest, report, facts, ports)
        return
    job = Job(run_id=run.run_id, job_key=CUSTOMIZATION_KEY, family="customization_job", index=0,
              model_id=spec.base_model, chunk_uri=spec.training_data,
              output_uri=f"s3://{settings.work_bucket}/runs/{run.run_id}/customization/",
              records=report.files["training"].records, bytes=report.files["training"].bytes, first_row=0,
              end_row=report.files["training"].records)
    sent = [Outgoing("submit", SubmitJob(run_id=run.run_id, job_key=job.job_key))]
    if await store.put_new_jobs([job], send=sent):
        await deliver(sent, queues=queues, store=store)
    latest = await store.get_run(run.run_id)
    if latest is not None and latest.status == "PREPARING":
        await move_unless_cancelled(latest, "RUNNING", store=store, send=[], preflight=facts, jobs_total=1,
                                    total_rows=job.records)
    log.info("customization_started", records=job.records, cost_usd=report.cost.get("total_usd"))


def _preflight(run: Run, ports: StartPorts, lifecycle: str | None) -> PreflightReport:
    """The pre-flight over the S3 files (streamed), with its report written to the results bucket."""
    objects = ports.objects

    def lines(uri: str):
        return None if objects.size(uri) is None else objects.lines(uri)

    report = preflight(run.customization, lines=lines, lifecycle=lifecycle,
                       gate_hours=ports.settings.gate_hosting_hours)
    prefix = report_prefix(ports.settings.results_bucket, run.run_id)
    objects.put(f"{prefix}/preflight.json", orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))
    objects.put(f"{prefix}/preflight.txt", report.as_text().encode())
    return report


def _facts(run: Run, report: PreflightReport, results_bucket: str) -> dict:
    """What the run item, the email and the answer event carry about the pre-flight."""
    prefix = report_prefix(results_bucket, run.run_id)
    return {
        "ok": report.ok, "over_budget": report.over_budget, "problems_total": report.problems_total,
        "errors": len(report.errors), "text": report.as_text(limit=SHOWN_PROBLEMS),
        "report_uri": f"{prefix}/preflight.json", "report_text_uri": f"{prefix}/preflight.txt",
        "records": {role: f.records for role, f in report.files.items()},
        "hashes": {role: f.sha256 for role, f in report.files.items()},
        "hyperparameters": report.hyperparameters, "defaults_filled": report.defaults_filled,
        "cost": report.cost, "lifecycle": report.base_model.get("lifecycle"), "checked_at": now().isoformat(),
    }


async def _end_at_preflight(run: Run, report: PreflightReport, facts: dict, ports: StartPorts) -> None:
    """Validation failed, over budget, or --validate-only: the run ends here, with the report."""
    if report.ok:
        verdict, outcome, error = "validated", "SUCCEEDED", None
    elif report.over_budget and len(report.errors) == 1:
        verdict, outcome = "budget_refused", "FAILED"
        error = (f"refused before any job: the estimated cost ${report.cost['total_usd']:,.2f} is over the budget of "
                 f"${report.budget_usd:,.2f}")
    else:
        verdict, outcome = "validation_failed", "FAILED"
        error = f"the pre-flight found {len(report.errors):,} error(s); no job was created. See {facts['report_text_uri']}"
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=outcome))]
    summary = {"kind": "customize", "verdict": verdict, "preflight": facts}
    if outcome == "SUCCEEDED":
        run = await ports.store.move_run(run, "FINALIZING", preflight=facts)
    await ports.store.move_run(run, outcome, preflight=facts, summary=summary, error=error, send=sent)
    await deliver(sent, queues=ports.queues, store=ports.store)
    log.info("customization_preflight_ended", verdict=verdict, errors=len(report.errors))
