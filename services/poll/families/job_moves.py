"""What poll does alike for every family of job: it drops a check that is not the job's live one,
and it moves a job, sending the run's collector CollectRun in the same write where the move calls
for it."""
from __future__ import annotations

from typing import Any

import structlog

from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.domain.runs import Job
from shared.messages import CheckJob, CollectRun

log = structlog.get_logger("quarry.poll")


def check_applies(cmd: CheckJob, job: Job) -> bool:
    """Whether a CheckJob should look at the job on Bedrock: it was submitted (submit schedules the
    first check), has not ended (its end sent CollectRun), and the check is of the job's live loop."""
    if job.bedrock_arn is None or job.terminal:
        return False
    if cmd.seq is not None and cmd.seq != job.check_seq:
        # A second loop for the job (a redelivered SubmitJob, a re-drive): the live one goes on.
        log.info("stale_check_dropped", job_key=job.job_key, seq=cmd.seq, live_seq=job.check_seq)
        return False
    return True


async def move_job(job: Job, status: str, *, collect: bool, store: RunStore, queues: Queues, **changes: Any) -> Job:
    """The job moved to `status`; with `collect`, the run's collection is asked for in the same write
    (kept in the outbox, so a crash cannot lose it) and then sent."""
    if not collect:
        return await store.move_job(job, status, **changes)
    sent = [Outgoing("postprocess", CollectRun(run_id=job.run_id))]
    job = await store.move_job(job, status, send=sent, **changes)
    await deliver(sent, queues=queues, store=store)
    return job
