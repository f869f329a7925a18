"""Waking a run's jobs that wait for a slot of their model, once one of its jobs gave a slot back.

Poll (a job ended) and submit (a create was rejected) both free slots; both wake through here, so
one rule says who is waiting."""
from __future__ import annotations

import structlog

from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Job
from shared.errors import QuarryError
from shared.messages import SubmitJob
from shared.settings import Settings

log = structlog.get_logger("quarry.slots")


async def wake_waiting(freed: Job, *, store: RunStore, queues: Queues, settings: Settings) -> None:
    """Once `freed` gave its slot back: wake its run's jobs waiting for a slot of its model, earliest
    first, as many as the model has slots free, each with a SubmitJob of its live loop (its seq).

    A wake is a hint, never state: sent after the write, not through the outbox, since a lost one
    costs only the wait that the job's own delayed loop still covers. Submit treats it as a copy of
    that loop's message (a stale seq is dropped, two copies race on the job's version, one wins)
    that acts only on a PENDING job, so it can neither start a second loop nor a second create.
    Jobs of other runs waiting on the model are not woken: they find the slot at their next look
    (the table has no index of waiting jobs by model; one query of this run's jobs stays cheap)."""
    try:
        holders, _ = await store.slot_state(freed.model_id)
        free = settings.concurrency_for(freed.model_id) - len(holders)
        if free <= 0:
            return  # taken already (another run's job, or a loop that looked just now)
        jobs = await store.list_jobs(freed.run_id)
        waiting = sorted((job for job in jobs if _waits_for_slot(job, freed.model_id)),
                         key=lambda job: (job.attempt, job.index))[:free]
        for job in waiting:
            await queues.send("submit", SubmitJob(run_id=job.run_id, job_key=job.job_key, seq=job.submit_seq,
                                                  wake=True))
    except QuarryError as exc:  # the slot is given back already; only the wake is lost
        log.warning("wake_not_sent", job_key=freed.job_key, reason=str(exc))
        return
    if waiting:
        log.info("slot_waiters_woken", job_key=freed.job_key, woken=[job.job_key for job in waiting], free=free)


def _waits_for_slot(job: Job, model_id: str) -> bool:
    # A job PENDING after a throttled create (throttles > 0) is backing off Bedrock, not waiting
    # for a slot: waking it would defeat the backoff.
    return job.family == "batch_job" and job.status == "PENDING" and job.model_id == model_id and job.throttles == 0
