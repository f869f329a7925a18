"""notify: on every terminal outcome, an email-ready summary to SNS and an event on Quarry's bus."""
from __future__ import annotations

import uuid

import structlog

from shared.adapters.notifications import Notifier
from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from services.notify.customization_email import customization_email
from services.notify.evaluation_email import evaluation_email
from services.notify.promises import promise_lines
from shared.domain.estimate import describe as describe_estimate
from shared.domain.runs import Run, now
from shared.crashpoints import crash_point
from shared.errors import PermanentError, RetryableError
from shared.messages import CollectRun, RunFinished

log = structlog.get_logger("quarry.notify")

# How long a claim to send a run's email stands: well under the notify queue's visibility timeout,
# so a redelivery after a crash finds the claim stale and sends.
CLAIM_S = 30
NOTIFICATION_ID_LINE = "Notification id: "

_HEADLINES = {
    "SUCCEEDED": "succeeded",
    "PARTIAL": "partially succeeded",
    "FAILED": "failed",
    "CANCELLED": "was cancelled",
}


async def run_finished(event: RunFinished, *, store: RunStore, notifier: Notifier, queues: Queues | None = None) -> None:
    run = await store.get_run(event.run_id)
    if run is None:
        raise PermanentError(f"no run {event.run_id}")
    if run.notified_at is not None:
        return  # a redelivery: the email went out already
    if run.parent_run_id is not None and queues is not None:
        # A model's child run of an evaluation: no email of its own. Its parent is told, in the
        # same write that settles the child, and emails once when its last child has ended.
        sent = [Outgoing("postprocess", CollectRun(run_id=run.parent_run_id))]
        await store.update_run(run, notified_at=now(), send=sent)
        await deliver(sent, queues=queues, store=store)
        log.info("child_reported_to_parent", parent_run_id=run.parent_run_id, outcome=event.outcome)
        return
    notification_id = uuid.uuid5(uuid.NAMESPACE_URL, f"quarry:{run.run_id}:{event.outcome}").hex
    if run.emailed_at is None:
        run = await _claim(run, notification_id, store=store)
        subject, body = {"evaluate": evaluation_email, "customize": customization_email}.get(run.kind, email)(
            run, event.outcome)
        # The id also ends the body: mail filters (and the local sink, since moto's HTTP delivery
        # drops message attributes) can drop a copy a crash-and-retry sends.
        body += f"\n\n{NOTIFICATION_ID_LINE}{notification_id}"
        await notifier.email(subject, body, notification_id=notification_id)
        crash_point("notify.after_email_sent")
        run = await store.update_run(run, emailed_at=now())
    what = {"evaluate": "Evaluation", "customize": "Customization"}.get(run.kind, "Run")
    detail_type = f"Quarry {what} Completed" if event.outcome in ("SUCCEEDED", "PARTIAL") else f"Quarry {what} Failed"
    await notifier.event(detail_type, {"run_id": run.run_id, "outcome": event.outcome, "input_uri": run.input_uri,
                                       "result_uri": run.result_uri, "summary": run.summary, "error": run.error,
                                       "notification_id": notification_id, "request_id": run.request_id})
    await store.update_run(run, notified_at=now())
    log.info("run_notified", outcome=event.outcome)


async def _claim(run: Run, notification_id: str, *, store: RunStore) -> Run:
    """Mark the run as being notified before sending, conditioned on its version: of two copies of
    one RunFinished, only one sends. A claim older than CLAIM_S belongs to a notify that died;
    the email is sent again with the same notification id, which subscribers de-duplicate on."""
    if run.notifying_at is not None and (now() - run.notifying_at).total_seconds() < CLAIM_S:
        raise RetryableError(f"run {run.run_id} is being notified by another worker", delay_s=CLAIM_S)
    if run.notifying_at is not None:
        log.warning("notification_resent_after_crash", notification_id=notification_id)
    return await store.update_run(run, notifying_at=now(), notification_id=notification_id)


def email(run: Run, outcome: str) -> tuple[str, str]:
    """Subject and plain-text body of a run's email."""
    name = run.spec.name if run.spec and run.spec.name else run.run_id
    summary = run.summary or {}
    subject = f"Quarry run {name} {_HEADLINES[outcome]}"
    lines = [f"Run {run.run_id} {_HEADLINES[outcome]}.", "", f"Input:   {run.input_uri}"]
    if run.spec:
        lines.append(f"Model:   {run.spec.model_id}")
    if summary.get("estimate"):
        heading = "Estimate (a dry run: no job was created, nothing was sent):" if summary.get("dry_run") else "Estimate:"
        lines += ["", heading] + [f"  {line}" for line in describe_estimate(summary["estimate"])]
    if "succeeded" in summary:
        lines += [
            f"Rows:    {summary['rows']:,} ({summary['succeeded']:,} succeeded, {summary['failed']:,} failed)",
            f"Tokens:  {summary['input_tokens']:,} in, {summary['output_tokens']:,} out",
            f"Cost:    {'$%.4f' % summary['estimated_cost_usd'] if summary.get('estimated_cost_usd') is not None else 'unknown'} "
            "(estimated, batch prices)",
            f"Jobs:    {summary['jobs']} ({summary['retried_jobs']} retried, {summary['on_demand_records']} records on demand)",
            f"Took:    {summary['duration_s']} s",
        ]
        lines += promise_lines(summary)
    if run.result_uri:
        lines.append(f"Results: {run.result_uri}")
    if run.error:
        lines += ["", f"Error: {run.error}"]
    if summary.get("top_errors"):
        lines += ["", "Top error reasons:"] + [f"  {count:>6,} × {reason}" for reason, count in summary["top_errors"]]
    lines += ["", f"See progress and results with: quarry status {run.run_id} / quarry results {run.run_id}"]
    return subject, "\n".join(lines)
