"""Cancelling an evaluation: its work is its children's (one batch run per model, then the judge's
runs), so a cancel is passed on to each of them; the parent ends CANCELLED, with its one email,
once the last child has ended (services/postprocess/kinds/evaluate.py)."""
from __future__ import annotations

import structlog

from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.runs import Run
from shared.errors import RetryableError
from shared.messages import CancelRun, CollectRun

log = structlog.get_logger("quarry.submit")

# How long to wait for a child whose StartRun is still on its way before passing the cancel on again.
CHILD_WAIT_S = 5


async def cancel_evaluation(run: Run, *, store: RunStore, queues: Queues) -> None:
    """Pass the cancel on to every child that has not ended (each stops its own jobs and reports to
    the parent as it ends). Safe to run twice: a child already cancelling ignores a second one."""
    missing = []
    for name, child_id in {**run.children, **{f"judge:{k}": v for k, v in (run.judges or {}).items()}}.items():
        child = await store.get_run(child_id)
        if child is None:
            missing.append(name)  # its StartRun is in flight: it must exist before it can be cancelled
        elif not child.terminal and not child.cancel_requested:
            await queues.send("submit", CancelRun(run_id=child_id))
    log.info("evaluation_cancelling", children=len(run.children) + len(run.judges or {}), waiting_for=len(missing))
    if missing:
        raise RetryableError(f"evaluation {run.run_id}: the runs of {', '.join(missing)} are being created; the cancel "
                             "is passed on once they exist", delay_s=CHILD_WAIT_S)
    # Children that had all ended already report nothing more: the parent is collected now.
    await queues.send("postprocess", CollectRun(run_id=run.run_id))
