"""The hosting family in poll: a provisioned throughput or deployment re-checked until it is in
service (Bedrock sends no events for these, so re-checks are the only path; no fixed waits), then
watched while its run lasts, so a hosting that fails or disappears during the gate is seen."""
from __future__ import annotations

import structlog

from services.poll.families.job_moves import check_applies, move_job
from shared.adapters.customization import Customizations, HostingState
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Job
from shared.messages import CheckJob
from shared.settings import Settings

log = structlog.get_logger("quarry.poll")

FROM_BEDROCK = {"Creating": "SUBMITTED", "Updating": "RUNNING", "InService": "RUNNING", "Active": "RUNNING",
                "Failed": "FAILED"}


async def check(cmd: CheckJob, job: Job, *, store: RunStore, queues: Queues, settings: Settings,
                customizations: Customizations) -> None:
    if not check_applies(cmd, job):
        return
    state = await customizations.get_hosting(job.hosting_kind, job.bedrock_arn)
    job = await _record(job, state, store=store, queues=queues, check_seq=job.check_seq + 1)
    run = await store.get_run(job.run_id)
    if not job.terminal and run is not None and not run.terminal:
        # Creating: look again soon. In service: keep an eye on it while the gate runs.
        await queues.send("poll", CheckJob(run_id=job.run_id, job_key=job.job_key, seq=job.check_seq),
                          delay_s=settings.poll_interval_s)


async def _record(job: Job, state: HostingState | None, *, store: RunStore, queues: Queues, **also) -> Job:
    if state is None:
        status, changes = "FAILED", {"bedrock_status": "NotFound",
                                     "message": f"the hosting {job.bedrock_arn} no longer exists (404)"}
    else:
        status = FROM_BEDROCK.get(state.status, job.status)
        changes = {"bedrock_status": state.status, "message": state.failure_message}
    changes |= also
    if status == job.status:
        return await store.update_job(job, **changes)
    log.info("hosting_status_changed", run_id=job.run_id, status=status, bedrock_status=changes["bedrock_status"])
    # In service (the gate can start) or failed (it must be deleted): the run's collector decides.
    collect = status in ("RUNNING", "FAILED")
    return await move_job(job, status, collect=collect, store=store, queues=queues, **changes)
