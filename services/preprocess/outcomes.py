"""How preprocess ends a start that cannot run, and moves a run it staged: shared by every kind."""
from __future__ import annotations

from shared.adapters.queues import Outgoing, Queues, deliver
from shared.adapters.store import RunStore
from shared.domain.runs import Run
from shared.errors import ConflictError
from shared.messages import RunFinished


async def fail_run(run: Run, reason: str, *, store: RunStore, queues: Queues, **changes) -> None:
    """The run FAILED with `reason`, and its RunFinished (the email, the answer event) in the same write."""
    sent = [Outgoing("notify", RunFinished(run_id=run.run_id, outcome="FAILED"))]
    await store.move_run(run, "FAILED", error=reason, send=sent, **changes)
    await deliver(sent, queues=queues, store=store)


async def move_unless_cancelled(run: Run, status: str, *, store: RunStore, send: list[Outgoing], **changes) -> Run:
    try:
        return await store.move_run(run, status, send=send, **changes)
    except ConflictError:
        # Cancelled while preparing: keep CANCELLING; submit cancels the pending jobs.
        latest = await store.get_run(run.run_id)
        if latest is None or latest.status != "CANCELLING":
            raise
        return await store.update_run(latest, send=send, **changes)
