"""The hosting sweeper: part of the watchdog's sweep, the last line of defence against a hosting
(provisioned throughput or deployment) that Quarry made and nobody deletes.

Every hosting named like Quarry's (`quarry-<run id>-hosting`) that Bedrock lists is looked up:
- kept (its hosting job COMPLETED after a passed gate): left alone;
- its run is lost (no run item) or over without keeping it, for longer than the outbox grace:
  deleted (the run's own clean-up normally got there first; this catches crashes and failures);
- its run is still going but the hosting is older than `hosting_ttl_s`: deleted (a gate that
  never ends must not bill for ever); poll then sees it gone and the run ends.
Each deletion is emailed (HostingSwept through notify), once: only the delete that found it does.
"""
from __future__ import annotations

import datetime as dt
import re

import structlog

from shared.adapters.customization import Customizations
from shared.adapters.queues import Queues
from shared.adapters.store import RunStore
from shared.domain.customization import PRICES
from shared.domain.runs import now
from shared.errors import ConflictError
from shared.messages import HostingSwept
from shared.settings import Settings

log = structlog.get_logger("quarry.watchdog")

HOSTING_PREFIX = "quarry-"
HOSTING_KEY = "hosting"
_NAME = re.compile(r"^quarry-(?P<run_id>[0-9a-f]{32})-hosting$")


async def sweep_hosting(*, store: RunStore, queues: Queues, customizations: Customizations,
                        settings: Settings) -> list[str]:
    """Delete every Quarry hosting that must not be billing any more; the ARNs deleted."""
    swept: list[str] = []
    at = now()
    for hosting in await customizations.list_hostings(HOSTING_PREFIX):
        match = _NAME.match(hosting.name)
        if match is None:
            continue  # not Quarry's
        run = await store.get_run(match["run_id"])
        job = await store.get_job(run.run_id, HOSTING_KEY) if run else None
        age = (at - hosting.created).total_seconds() if isinstance(hosting.created, dt.datetime) else 0.0
        if run is None:
            reason = "its run is lost (Quarry's table has no run for it)" if age > settings.outbox_grace_s else None
        elif job is not None and job.status == "COMPLETED":
            continue  # kept after its gate passed: the user deletes it (quarry hosting delete)
        elif run.terminal:
            quiet = (at - run.updated_at).total_seconds() > settings.outbox_grace_s
            reason = f"its run ended {run.status} without keeping it" if quiet else None
        elif age > settings.hosting_ttl_s:
            reason = (f"it is older than its time-to-live of {settings.hosting_ttl_s} s while its run is still "
                      f"{run.status}")
        else:
            reason = None
        if reason is None or not await customizations.delete_hosting(hosting.kind, hosting.arn):
            continue
        swept.append(hosting.arn)
        log.warning("hosting_swept", hosting_arn=hosting.arn, run_id=match["run_id"], reason=reason)
        if job is not None and not job.terminal:
            try:
                await store.move_job(job, "CANCELLED", message=f"deleted by the sweeper: {reason}")
            except ConflictError:
                pass  # poll or postprocess moved it meanwhile; poll's next check sees the hosting gone
        spec = run.customization if run else None
        prices = PRICES.get(spec.base_model) if spec else None
        hourly = prices.pt_hour * spec.hosting.model_units if prices and hosting.kind == "provisioned" else None
        await queues.send("notify", HostingSwept(run_id=match["run_id"], hosting_arn=hosting.arn,
                                                 hosting_name=hosting.name, reason=reason, hourly_usd=hourly))
    return swept
