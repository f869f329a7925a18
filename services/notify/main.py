"""notify worker process: `python -m services.notify.main`."""
from __future__ import annotations

from functools import partial

from services.notify.handlers import run_finished
from services.notify.hosting import hosting_swept
from shared.bootstrap import Ports, by_type, run_worker
from shared.messages import NOTIFY_INBOX, HostingSwept, RunFinished


def wire(p: Ports):
    return by_type({RunFinished: partial(run_finished, store=p.store, notifier=p.notifier, queues=p.queues),
                    HostingSwept: partial(hosting_swept, notifier=p.notifier)})


def main() -> None:
    run_worker("notify", NOTIFY_INBOX, wire)


if __name__ == "__main__":
    main()
