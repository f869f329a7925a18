"""The batch_job family in submit: a Bedrock batch inference job admitted through its model's
semaphore (slots) and created exactly once. Moved here whole from services/submit/handlers.py.

A job with no free slot waits: its own delayed SubmitJob (its admission loop) looks again later,
less often the longer it waits. The fast path is the wake: whoever gives a slot back (poll at a
job's end, a rejected create here) sends the run's waiting jobs a SubmitJob of their live loop
(shared/slot_wakes.py), so a freed slot is taken at once rather than at the next look."""
from __future__ import annotations

import structlog

from shared.adapters.bedrock import BatchJobs
from shared.adapters.queues import MAX_DELAY_S, Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.domain.runs import JOB_HOLDS_SLOT, Job, parse_job_name
from shared.errors import PermanentError, RetryableError
from shared.lost_jobs import track_absent
from shared.messages import CheckJob, CollectRun, SubmitJob
from shared.settings import Settings
from shared.slot_wakes import wake_waiting

log = structlog.get_logger("quarry.submit")


async def submit(cmd: SubmitJob, job: Job, *, store: RunStore, bedrock: BatchJobs, queues: Queues,
                 settings: Settings) -> None:
    if cmd.wake and job.status != "PENDING":
        # Admitted already (by its loop, or another wake): the message that admitted it carries it.
        log.info("wake_dropped", job_key=job.job_key, status=job.status)
        return
    run = await store.get_run(cmd.run_id)
    if job.status == "PENDING" and (run is None or run.terminal or run.status == "CANCELLING"):
        reason = "cancelled before submission" if run is None or run.cancel_requested else f"the run {run.status.lower()}"
        sent = [Outgoing("postprocess", CollectRun(run_id=job.run_id))]
        await store.move_job(job, "CANCELLED", message=reason, send=sent)
        await deliver(sent, queues=queues, store=store)
        return
    if job.status == "PENDING":
        admitted = await _admit(job, store=store, bedrock=bedrock, settings=settings)
        if admitted is None:
            # Waiting hours for a slot is normal: a fresh delayed message per wait, never a retry
            # of this one, so waiting cannot reach the queue's receive limit and park the job.
            await _wait(job, slot_wait_s(job, settings), store=store, queues=queues, why="slot_wait")
            return
        # The intent is recorded before the call: a crash after Bedrock made the job re-sends the
        # same clientRequestToken and gets that job back.
        job = admitted
    if job.status == "SUBMITTING":
        job = await _create(job, store=store, bedrock=bedrock, queues=queues, settings=settings)
        if job.status == "PENDING":
            return  # throttled: waiting without a slot for its next try
        latest = await store.get_run(cmd.run_id)
        if job.bedrock_arn and latest is not None and latest.status == "CANCELLING":
            # Cancelled while this job was being created: cancel_run saw no ARN to stop.
            await bedrock.stop(job.bedrock_arn)
    if not job.terminal and job.bedrock_arn:
        # A redelivery sends this again: the CheckJob carries the job's loop number, and poll
        # drops every copy but one, so a job never has two check loops.
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                          delay_s=settings.poll_interval_s)


def slot_wait_s(job: Job, settings: Settings) -> int:
    """How long a job without a slot waits before it looks again: the poll interval, doubling with
    each wait (submit_seq counts them) up to four times it, since a freed slot of its own run wakes
    it at once. Capped at half the watchdog's stall_after_s, so a wait is never taken for a stall."""
    grown = settings.poll_interval_s * 2 ** min(job.submit_seq, 2)
    return max(settings.poll_interval_s, min(grown, settings.stall_after_s // 2, MAX_DELAY_S))


async def cancel(job: Job, *, store: RunStore, bedrock: BatchJobs) -> None:
    """A pending job never starts; a running one is stopped (poll sees Stopped and collects what it made)."""
    if job.status == "PENDING":
        await store.move_job(job, "CANCELLED", message="cancelled before submission")
    elif job.status in JOB_HOLDS_SLOT and job.bedrock_arn:
        await bedrock.stop(job.bedrock_arn)


async def _wait(job: Job, delay_s: int, *, store: RunStore, queues: Queues, why: str, **changes) -> None:
    """Put the job back to wait: the next admission loop's message is written with the change."""
    seq = job.submit_seq + 1
    sent = [Outgoing("submit", SubmitJob(run_id=job.run_id, job_key=job.job_key, seq=seq), delay_s=delay_s)]
    if job.status == "SUBMITTING":
        await store.move_job(job, "PENDING", submit_seq=seq, send=sent, **changes)  # gives the slot back
    else:
        await store.update_job(job, submit_seq=seq, send=sent, **changes)
    await deliver(sent, queues=queues, store=store)
    log.info("job_waiting", job_key=job.job_key, reason=why, delay_s=delay_s, seq=seq)


async def _create(job: Job, *, store: RunStore, bedrock: BatchJobs, queues: Queues, settings: Settings) -> Job:
    try:
        arn = await bedrock.create(job)
    except RetryableError as exc:
        # Back off on throttles counted as throttles, without holding a slot meanwhile. The slot
        # wakes nobody: the next create would most likely be throttled too.
        throttles = job.throttles + 1
        delay = min(5 * 2 ** (throttles - 1), MAX_DELAY_S)
        await _wait(job, delay, store=store, queues=queues, why="create_throttled", throttles=throttles,
                    message=str(exc))
        return job.model_copy(update={"status": "PENDING"})
    except PermanentError as exc:
        log.error("job_rejected", job_key=job.job_key, reason=str(exc))
        sent = [Outgoing("postprocess", CollectRun(run_id=job.run_id))]
        job = await store.move_job(job, "FAILED", message=str(exc), send=sent)  # gives the slot back
        await deliver(sent, queues=queues, store=store)
        await wake_waiting(job, store=store, queues=queues, settings=settings)
        return job
    log.info("job_submitted", job_key=job.job_key, bedrock_arn=arn)
    return await store.move_job(job, "SUBMITTED", bedrock_arn=arn, throttles=0, message=None)


async def _admit(job: Job, *, store: RunStore, bedrock: BatchJobs, settings: Settings) -> Job | None:
    """The job SUBMITTING with a slot of the model's limit (less the active jobs Quarry's table does
    not know about); None if none is free."""
    holders, absent = await store.slot_state(job.model_id)
    active = await bedrock.active_job_names(job.model_id)
    await track_absent(job.model_id, holders, absent, set(active), store=store, settings=settings)
    outside = [name for name in active if name not in holders and parse_job_name(name) is None]
    limit = settings.concurrency_for(job.model_id) - len(outside)
    admitted = await store.admit_job(job, limit) if limit > 0 else None
    log.info("job_admission", job_key=job.job_key, admitted=admitted is not None, limit=limit,
             outside_jobs=len(outside))
    return admitted
