"""The watchdog: what no message will do by itself, done by whichever worker holds the lease.

Every worker runs it beside its consumer; a lease in the table lets one sweep at a time, so it
keeps running while any worker is alive. Each sweep:
- sends outbox messages a crash left behind (a change committed, its message never sent);
- fails a run whose messages were parked, or crashed their handler `max_crashes` times, with the
  last error, and sends its RunFinished (so an email, within minutes, never silence);
- re-drives a run that shows no progress for `stall_after_s`: a PENDING job with no SubmitJob
  alive, an active job whose check loop died, a run whose jobs all ended but was never collected,
  a FINALIZING or PREPARING run whose worker died, an outcome never notified. Handlers are
  idempotent, so a re-drive that was not needed costs a message. After `max_redrives` the run
  fails with the reason: a worker dead for good ends in a failure and an email, not a hang;
- reconciles the slots of every model a running job holds one of: a job Bedrock has stopped
  listing for longer than `absent_job_grace_s` is marked, and poll's next check ends it
  (shared/lost_jobs.py), even when no other job of its model waits for a slot.
A run it fails has its Bedrock work ended at once: batch jobs and a customization job stopped, a
hosting deleted (never left to the hosting sweeper's time-to-live: it bills by the hour).
The reason a run is stalled is kept on the run (`Run.stalled`) for `quarry status`.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from dataclasses import dataclass, field
import structlog

from shared.adapters.bedrock import BatchJobs
from shared.adapters.customization import Customizations
from shared.hosting_sweeper import sweep_hosting
from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.domain.runs import JOB_HOLDS_SLOT, Job, Run, now
from shared.errors import ConflictError, QuarryError
from shared.lost_jobs import track_absent
from shared.messages import CheckJob, CollectRun, RunFinished, StartRun, SubmitJob
from shared.settings import Settings

log = structlog.get_logger("quarry.watchdog")

LEASE = "watchdog"


@dataclass
class Sweep:
    """What one sweep did, for its log line and for tests."""

    relayed: int = 0
    redriven: dict[str, str] = field(default_factory=dict)  # run_id -> why
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> error
    lost: list[str] = field(default_factory=list)  # names of jobs Bedrock stopped listing, marked now
    hosting_deleted: list[str] = field(default_factory=list)  # ARNs of hosting the sweeper deleted


async def watch(*, store: RunStore, queues: Queues, bedrock: BatchJobs, settings: Settings, worker: str,
                customizations: Customizations | None = None) -> None:
    """Sweep every `watchdog_interval_s` while holding the lease; until cancelled."""
    holder = f"{worker}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    while True:
        try:
            if await store.take_lease(LEASE, holder, settings.watchdog_interval_s * 3):
                done = await sweep(store=store, queues=queues, bedrock=bedrock, settings=settings,
                                   customizations=customizations)
                if done.relayed or done.redriven or done.failed or done.lost or done.hosting_deleted:
                    log.info("watchdog_swept", relayed=done.relayed, redriven=len(done.redriven),
                             failed=len(done.failed), lost=len(done.lost), hosting_deleted=len(done.hosting_deleted))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
            log.exception("watchdog_sweep_failed")
        await asyncio.sleep(settings.watchdog_interval_s)


async def sweep(*, store: RunStore, queues: Queues, bedrock: BatchJobs, settings: Settings,
                customizations: Customizations | None = None) -> Sweep:
    done = Sweep()
    done.relayed = await _relay(store, queues, settings)
    models: set[str] = set()
    for run in await store.active_runs(now() - dt.timedelta(days=settings.watch_days)):
        try:
            await _watch_run(run, store=store, queues=queues, bedrock=bedrock, settings=settings, done=done,
                             models=models, customizations=customizations)
        except ConflictError:
            continue  # a worker moved it meanwhile: that is progress; look again next sweep
    done.lost = await _reconcile_slots(models, store=store, bedrock=bedrock, settings=settings)
    if customizations is not None:
        try:  # every Quarry hosting not kept whose run is over, lost or past its TTL (shared/hosting_sweeper.py)
            done.hosting_deleted = await sweep_hosting(store=store, queues=queues, customizations=customizations,
                                                       settings=settings)
        except QuarryError as exc:
            log.warning("hosting_not_swept", reason=str(exc))
    return done


async def _relay(store: RunStore, queues: Queues, settings: Settings) -> int:
    """Send what committed changes implied but their writer never sent (it crashed)."""
    left = await store.unsent(now() - dt.timedelta(seconds=settings.outbox_grace_s))
    for item in left:
        await queues.send_body(item.worker, item.body, delay_s=item.delay_s, what="an unsent message")
        await store.forget_sent(item.run_id, item.key)
        log.info("outbox_message_relayed", run_id=item.run_id, worker=item.worker)
    return len(left)


async def _reconcile_slots(models: set[str], *, store: RunStore, bedrock: BatchJobs, settings: Settings) -> list[str]:
    """Submit reconciles a model's slots only when a job waits for one: here every model a running
    job holds a slot of is looked at, so a lost job ends even when nothing else waits."""
    lost: list[str] = []
    for model_id in sorted(models):
        try:
            holders, absent = await store.slot_state(model_id)
            listed = set(await bedrock.active_job_names(model_id))
            lost += await track_absent(model_id, holders, absent, listed, store=store, settings=settings)
        except QuarryError as exc:  # Bedrock unreachable, say: the next sweep looks again
            log.warning("slots_not_reconciled", model_id=model_id, reason=str(exc))
    return lost


async def _watch_run(run: Run, *, store: RunStore, queues: Queues, bedrock: BatchJobs, settings: Settings,
                     done: Sweep, models: set[str], customizations: Customizations | None = None) -> None:
    bound = log.bind(run_id=run.run_id)
    crashes, last_error, fatal = await store.failures(run.run_id)
    if not run.terminal and (fatal or crashes >= settings.max_crashes):
        why = "a message for it was parked in a dead-letter queue" if fatal else f"its messages failed {crashes} times"
        error = f"the run cannot go on: {why}. Last error: {last_error}"
        await fail_run(run, error, store=store, queues=queues, bedrock=bedrock, customizations=customizations)
        done.failed[run.run_id] = error
        return
    jobs = await store.list_jobs(run.run_id) if run.status in ("RUNNING", "CANCELLING") else []
    models.update(job.model_id for job in jobs
                  if job.status in JOB_HOLDS_SLOT and job.bedrock_arn and job.family == "batch_job")
    children_done = None
    if run.kind == "evaluate" and run.status in ("RUNNING", "CANCELLING"):
        # An evaluation has no jobs of its own: its children (watched as runs themselves: the
        # models' runs, then the judge's) may run for hours, and a cancelled one waits for them to
        # stop. It is stalled only if every child has settled and it was never collected.
        child_ids = [*run.children.values(), *(run.judges or {}).values()]
        children = [await store.get_run(child_id) for child_id in child_ids]
        children_done = all(child is not None and child.settled for child in children)
    stall = diagnose(run, jobs, at=now(), stall_after_s=settings.stall_after_s, children_done=children_done)
    if stall is None:
        if run.stalled is not None:
            await store.update_run(run, stalled=None)
        return
    why, messages = stall
    if run.terminal:  # only its notice is missing: re-driving it can do no harm, however often
        await store.update_run(run, redrives=run.redrives + 1, stalled=why)  # and not before the next quiet spell
        await _send(messages, queues)
        bound.warning("run_redriven", why=why, redrives=run.redrives + 1)
        done.redriven[run.run_id] = why
        return
    if run.redrives >= settings.max_redrives:
        error = (f"the run made no progress after {run.redrives} re-drives by the watchdog: {why}"
                 + (f". Last error: {last_error}" if last_error else ""))
        await fail_run(run, error, store=store, queues=queues, bedrock=bedrock, customizations=customizations)
        done.failed[run.run_id] = error
        return
    await store.update_run(run, redrives=run.redrives + 1, stalled=why)
    await _send(messages, queues)
    bound.warning("run_redriven", why=why, redrives=run.redrives + 1, messages=len(messages))
    done.redriven[run.run_id] = why


def diagnose(run: Run, jobs: list[Job], *, at: dt.datetime, stall_after_s: int,
             children_done: bool | None = None) -> tuple[str, list[Outgoing]] | None:
    """Why the run is stalled and the messages that re-drive it; None if it is moving."""
    def quiet(item: Run | Job, factor: int = 1) -> bool:
        return (at - item.updated_at).total_seconds() > stall_after_s * factor

    if run.terminal:
        if run.notified_at is None and quiet(run):
            return (f"it ended {run.status} but was never notified",
                    [Outgoing("notify", RunFinished(run_id=run.run_id, outcome=run.status))])
        return None
    if run.status == "PREPARING":
        # Staging a large input writes nothing for minutes: give it longer before a second try.
        if quiet(run, 3) and (run.spec is not None or run.evaluation is not None or run.customization is not None):
            return ("preprocess never finished preparing it",
                    [Outgoing("preprocess", StartRun(run_id=run.run_id, input_uri=run.input_uri, spec=run.spec,
                                                     origin=run.origin, source_key=run.source_key, kind=run.kind,
                                                     evaluation=run.evaluation, parent_run_id=run.parent_run_id,
                                                     customization=run.customization, validate_only=run.validate_only,
                                                     request_id=run.request_id))])
        return None
    if children_done is not None:
        if children_done and quiet(run):
            return ("its models' runs ended but it was never collected",
                    [Outgoing("postprocess", CollectRun(run_id=run.run_id))])
        return None
    if run.status == "FINALIZING":
        if quiet(run):
            return "postprocess never finished collecting it", [Outgoing("postprocess", CollectRun(run_id=run.run_id))]
        return None
    stuck = [job for job in jobs if not job.terminal and quiet(job)]
    if stuck:
        return (f"{len(stuck)} job(s) made no progress: " + ", ".join(f"{j.job_key} {j.status}" for j in stuck[:5]),
                [_redrive_job(job) for job in stuck])
    if all(job.terminal for job in jobs) and quiet(run) and all(quiet(job) for job in jobs):
        return "its jobs ended but it was never collected", [Outgoing("postprocess", CollectRun(run_id=run.run_id))]
    return None


def _redrive_job(job: Job) -> Outgoing:
    if job.status in JOB_HOLDS_SLOT and job.bedrock_arn:
        return Outgoing("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq))
    return Outgoing("submit", SubmitJob(run_id=job.run_id, job_key=job.job_key, seq=job.submit_seq))


async def fail_run(run: Run, error: str, *, store: RunStore, queues: Queues, bedrock: BatchJobs,
                   customizations: Customizations | None = None) -> None:
    """End a run that cannot go on: FAILED with the error and its RunFinished in one write, then its
    jobs stopped (poll frees their slots as they end), its pending jobs cancelled, a customization
    job stopped and any hosting deleted now."""
    jobs = await store.list_jobs(run.run_id)
    error += _customize_cleanup_note(jobs) if customizations is not None else ""
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome="FAILED"))]
    await store.move_run(run, "FAILED", error=error, stalled=None, send=sent)
    await deliver(sent, queues=queues, store=store)
    log.error("run_failed_by_watchdog", run_id=run.run_id, error=error)
    for job in jobs:
        try:
            if job.family == "hosting":
                if customizations is not None:
                    await _delete_hosting(job, store=store, customizations=customizations)
            elif job.status == "PENDING":
                await store.move_job(job, "CANCELLED", message="the run failed before it was submitted")
            elif job.status in JOB_HOLDS_SLOT and job.bedrock_arn and job.family == "batch_job":
                await bedrock.stop(job.bedrock_arn)
            elif job.family == "customization_job" and not job.terminal and customizations is not None:
                # By name when the ARN was never kept (a create in flight: submit, seeing the run over
                # once its create returns, stops what it made).
                await customizations.stop_job(job.bedrock_arn or job.name)
                log.info("customization_job_stopped", run_id=run.run_id, reason="the run failed")
        except QuarryError as exc:  # submit or poll may be moving it too; they end it either way
            log.warning("job_not_stopped", run_id=run.run_id, job_key=job.job_key, reason=str(exc))


def _customize_cleanup_note(jobs: list[Job]) -> str:
    training = any(job.family == "customization_job" and not job.terminal and job.status != "PENDING" for job in jobs)
    hosting = any(job.family == "hosting" and job.status != "CANCELLED" for job in jobs)
    what = [part for part, present in (("its customization job is stopped", training),
                                       ("its hosting is deleted", hosting)) if present]
    return f". Quarry ended what it had started on Bedrock: {' and '.join(what)}" if what else ""


async def _delete_hosting(job: Job, *, store: RunStore, customizations: Customizations) -> None:
    """Delete the hosting of a failed run (by ARN, or by name if its create's answer was never kept;
    submit deletes what an in-flight create makes once it sees the run over), whatever its state:
    a failed run keeps nothing, and a provisioned throughput bills by the hour."""
    deleted = await customizations.delete_hosting(job.hosting_kind, job.bedrock_arn or job.name)
    log.info("hosting_deleted", run_id=job.run_id, hosting_arn=job.bedrock_arn, found=deleted, reason="the run failed")
    message = "deleted: the run failed"
    if job.status == "SUBMITTING" and not job.bedrock_arn:
        return  # left to submit: after its create it records the ARN, sees the run over and deletes it
    if not job.terminal:
        await store.move_job(job, "CANCELLED", message=message)
    elif job.status == "COMPLETED":
        await store.update_job(job, message=message)


async def _send(messages: list[Outgoing], queues: Queues) -> None:
    for item in messages:
        await queues.send(item.worker, item.message, delay_s=item.delay_s)
