"""Jobs Bedrock no longer lists: the slot reconciliation that submit runs at each admission and the
watchdog at each sweep, so a lost job is noticed even when no other job of its model waits.

A job of Quarry's that holds one of its model's slots, but that Bedrock has not listed among the
model's active jobs (ListModelInvocationJobs) for longer than `absent_job_grace_s`, has ended:
Bedrock lost it, or its end was never seen. It is marked (`Job.absent_since`), and poll's next
check of it fails it with that reason, frees its slot and asks for collection, which salvages what
it wrote and retries the rest. The grace covers a job created but not listed yet (the list is
eventually consistent) and a Bedrock that is restarting.
"""
from __future__ import annotations

import datetime as dt

import structlog

from shared.adapters.store import RunStore
from shared.domain.runs import now, parse_job_name
from shared.errors import ConflictError
from shared.settings import Settings

log = structlog.get_logger("quarry.lost_jobs")


async def track_absent(model_id: str, holders: set[str], absent: dict[str, dt.datetime], listed: set[str], *,
                       store: RunStore, settings: Settings) -> list[str]:
    """Time the model's slot holders Bedrock did not list (`listed`: its active job names) and mark
    those absent past the grace; the names newly marked."""
    at = now()
    marked = []
    missing = {name: absent.get(name, at) for name in holders if name not in listed and parse_job_name(name)}
    for name, since in list(missing.items()):
        if (at - since).total_seconds() <= settings.absent_job_grace_s:
            continue
        held = await store.get_job(*parse_job_name(name))
        if held is None or held.status not in ("SUBMITTED", "RUNNING") or not held.bedrock_arn:
            missing[name] = at  # not on Bedrock yet (being created): its absence counts from now
        elif held.absent_since is None:
            try:
                await store.update_job(held, absent_since=since)
            except ConflictError:
                continue  # poll moved it meanwhile; the next reconciliation looks again
            marked.append(name)
            log.warning("job_absent_from_bedrock", run_id=held.run_id, job_key=held.job_key, since=since.isoformat())
    if missing != absent:
        await store.mark_absent(model_id, missing)
    return marked
