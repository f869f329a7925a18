"""notify: the email and event when the watchdog's sweeper deleted a hosting Quarry had left billing."""
from __future__ import annotations

import uuid

import structlog

from services.notify.handlers import NOTIFICATION_ID_LINE
from shared.adapters.notifications import Notifier
from shared.messages import HostingSwept

log = structlog.get_logger("quarry.notify")


async def hosting_swept(event: HostingSwept, *, notifier: Notifier) -> None:
    # One id per deleted hosting: a redelivery sends the same id, which subscribers de-duplicate on.
    notification_id = uuid.uuid5(uuid.NAMESPACE_URL, f"quarry:swept:{event.hosting_arn}").hex
    cost = f" It cost about ${event.hourly_usd:,.2f} an hour." if event.hourly_usd is not None else ""
    body = "\n".join([
        f"Quarry deleted the hosting {event.hosting_name} ({event.hosting_arn}) of run {event.run_id}: {event.reason}.{cost}",
        "", "Quarry's sweeper deletes any hosting it made that is not kept once its run is over or lost, or once "
            "it is older than its time-to-live (QUARRY_HOSTING_TTL_S), so no path leaves one billing.",
        "", f"See the run with: quarry status {event.run_id}", "", f"{NOTIFICATION_ID_LINE}{notification_id}"])
    await notifier.email(f"Quarry deleted hosting {event.hosting_name}", body, notification_id=notification_id)
    await notifier.event("Quarry Hosting Deleted", {"run_id": event.run_id, "hosting_arn": event.hosting_arn,
                                                    "reason": event.reason, "notification_id": notification_id})
    log.info("hosting_sweep_notified", hosting_arn=event.hosting_arn)
